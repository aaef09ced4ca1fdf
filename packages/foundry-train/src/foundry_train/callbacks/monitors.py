"""foundry-train's callbacks: metrics file, loss/throughput plot, NaN and loss-spike guard."""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.core import Callback, Event, State, Time
from composer.loggers import Logger, LoggerDestination
from composer.utils import create_interval_scheduler, dist

from foundry_train.config.root import LossSpikeConfig
from foundry_train.config.times import parse_time
from foundry_train.errors import FoundryError

__all__ = ["MetricsFileLogger", "LossPlot", "LossSpikeGuard", "every", "read_metrics"]

LOSS_KEY = "loss/train/total"
THROUGHPUT_KEY = "throughput/tokens_per_sec"
LOSS_LABEL = "training loss (cross-entropy, nats/token)"


def every(interval: str) -> Callable[[State, Event], bool]:
    """Whether an "every ``interval``" callback is due at a BATCH_END or EPOCH_END event.

    composer's own interval scheduler (the one its checkpointer uses) counts ``interval`` in
    batches, epochs, tokens, samples or a fraction of max_duration; fit end is left to the caller.
    """
    spec = parse_time(interval)
    return create_interval_scheduler(
        Time(spec.value, spec.unit), include_end_of_training=False, checkpoint_events=False
    )


class MetricsFileLogger(LoggerDestination):
    """Appends every logged metric as one JSON line ``{"step": n, name: value}`` (rank 0)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if dist.get_global_rank() != 0:
            return
        row: dict[str, Any] = {"step": step}
        for key, value in metrics.items():
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, int | float):
                row[key] = value
        if len(row) == 1:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: str | Path, key: str) -> dict[int, float]:
    """``{step: value}`` of one metric from a metrics file; a later line wins (resumed runs)."""
    out: dict[int, float] = {}
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if key in row and row.get("step") is not None:
            out[int(row["step"])] = float(row[key])
    return out


class LossPlot(Callback):
    """Writes a PNG of training loss and throughput at the end of training (rank 0).

    Its title names the run, the model and the tokens trained on; the title is also stored as
    the PNG's ``Title`` text field.
    """

    def __init__(self, metrics_path: str | Path, out_path: str | Path, model: str = "") -> None:
        self.metrics_path = Path(metrics_path)
        self.out_path = Path(out_path)
        self.model = model

    def title(self, state: State) -> str:
        tokens = int(state.timestamp.token)
        model = f"{self.model}, " if self.model else ""
        return f"{state.run_name}: {model}{tokens:,} tokens, {int(state.timestamp.batch)} batches"

    def fit_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        loss = read_metrics(self.metrics_path, LOSS_KEY)
        tput = read_metrics(self.metrics_path, THROUGHPUT_KEY)
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        ax1.plot(list(loss), list(loss.values()), color="tab:blue")
        ax1.set_ylabel(LOSS_LABEL)
        ax1.grid(alpha=0.3)
        ax2.plot(list(tput), list(tput.values()), color="tab:orange")
        ax2.set_ylabel("throughput (tokens/s)")
        ax2.set_xlabel("batch")
        ax2.grid(alpha=0.3)
        title = self.title(state)
        fig.suptitle(title)
        fig.tight_layout()
        tmp = self.out_path.with_name(f"{self.out_path.name}.tmp-{os.getpid()}.png")
        fig.savefig(tmp, dpi=100, metadata={"Title": title, "Description": LOSS_LABEL})
        plt.close(fig)
        os.replace(tmp, self.out_path)


class LossSpikeGuard(Callback):
    """Stops on a NaN/inf loss; logs spikes above ``spike_ratio`` x running mean."""

    def __init__(self, cfg: LossSpikeConfig) -> None:
        self.cfg = cfg
        self.history: deque[float] = deque(maxlen=cfg.window)
        self.spikes_in_a_row = 0

    def batch_end(self, state: State, logger: Logger) -> None:
        loss = state.total_loss_dict.get(LOSS_KEY) if state.total_loss_dict else None
        if loss is None:
            return
        loss = float(loss)
        batch = int(state.timestamp.batch)
        if not math.isfinite(loss):
            raise FoundryError(
                f"the training loss became {loss} at batch {batch}. Lower optimizer.lr, enable "
                "gradient_clipping, or resume from an earlier checkpoint. (Fine-tuning a "
                "transformers model: a micro-batch whose responses max_seq_len cut off entirely "
                "has no token to score and gives NaN; raise max_seq_len.)"
            )
        full = len(self.history) == self.history.maxlen
        mean = sum(self.history) / len(self.history) if self.history else loss
        if full and loss > self.cfg.spike_ratio * mean:
            self.spikes_in_a_row += 1
            logger.log_metrics({"loss_spike/ratio": loss / mean})
            if self.cfg.stop_on_spike and self.spikes_in_a_row >= self.cfg.patience:
                raise FoundryError(
                    f"the loss spiked {self.spikes_in_a_row} batches in a row (batch {batch}: "
                    f"{loss:.4f} vs running mean {mean:.4f}). Lower optimizer.lr or resume earlier."
                )
            return
        self.spikes_in_a_row = 0
        self.history.append(loss)
