"""Test helper (run as a script): train from a YAML and die by SIGKILL at a chosen point.

usage: python train_until_killed.py CONFIG.yaml [EVENT BATCH MARKER.json]
(or through ``runpy.run_path`` with ``init_globals={"ARGS": [...]}``, as the tests do, so the
run starts in a process forked from one that already imported composer)

EVENT is a composer event name: ``after_backward`` kills in the middle of an optimizer step
(gradients computed, weights not yet updated), ``eval_batch_end`` in the middle of an evaluation.
The process dies the first time EVENT fires once ``BATCH`` batches are done; just before, it
writes MARKER.json saying where it was, so the test knows the kill happened where intended.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from composer.core import Callback, Event, State
from composer.loggers import Logger
from foundry_train.config import load_config
from foundry_train.trainer import train


class KillAt(Callback):
    def __init__(self, event: str, batch: int, marker: str) -> None:
        self.event, self.batch, self.marker = Event(event), batch, marker

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event != self.event or int(state.timestamp.batch) < self.batch:
            return
        where = {"event": event.value, "batch": int(state.timestamp.batch)}
        with open(self.marker, "w") as f:
            json.dump(where, f)
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


def main(args: list[str]) -> None:
    """Train CONFIG; with EVENT BATCH MARKER, die at that point instead of finishing."""
    config, *kill = args
    if not kill:
        train(load_config(config))
        return
    event, batch, marker = kill
    train(load_config(config), extra_callbacks=[KillAt(event, int(batch), marker)])
    raise SystemExit("the run finished without reaching the kill point")


if __name__ == "__main__":
    main(globals().get("ARGS") or sys.argv[1:])
