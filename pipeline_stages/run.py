"""pipeline.py's sizes, run record and stage runner (each stage is a command a user would type)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOSS_KEY = "loss/train/total"
LAST_N = 10  # batches averaged for the "loss fell below the target" check


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full run and ``--tiny``."""

    vocab_size: int
    seq_len: int
    batch_size: int
    lr: float
    first_round: int  # batches in the first training round
    next_rounds: int  # batches added by each further round
    max_batches: int  # give up (with an error) after this many
    max_files: int | None  # None: every file of the built-in corpus
    eval_examples: int  # per task
    new_tokens: int
    target_ratio: float  # train until the last LAST_N batches' mean loss < this x the first


# --tiny: a few files, short samples, a looser loss target, so that it stops on its own quickly.
FULL = Sizes(512, 128, 16, 4e-3, 200, 50, 2000, None, 200, 48, 0.5)
TINY = Sizes(512, 64, 8, 6e-3, 60, 30, 300, 40, 20, 16, 0.75)


@dataclass
class Run:
    """Paths and results of one pipeline run; printed as the final summary."""

    out: Path
    sizes: Sizes
    target_ratio: float
    stages: list[tuple[str, float]] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    generated: dict[str, str] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.out / name


class PipelineError(Exception):
    """A stage failed or its output is not what the next stage needs."""


# --- running stage commands -------------------------------------------------------------------


def command(name: str) -> list[str]:
    """How to run console script ``name`` (``foundry-data``...) with this interpreter's install."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    return [sys.executable, "-m", name.replace("-", "_")]


def run_stage(run: Run, title: str, argv: list[str]) -> str:
    """Run one stage command; its progress bars go to the terminal, its stdout is returned."""
    number = len(run.stages) + 1
    shown = " ".join(_quote(a) for a in [Path(argv[0]).name, *argv[1:]])
    print(f"\n[{number}] {title}\n    $ {shown}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=run.out)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(f"    {line}")
        sys.stdout.flush()
        lines.append(line)
    code = proc.wait()
    elapsed = time.perf_counter() - start
    run.stages.append((title, elapsed))
    if code != 0:
        raise PipelineError(
            f"stage '{title}' failed with exit status {code} (its message is above). "
            f"The command was: {shown}"
        )
    print(f"    done in {elapsed:.1f} s", flush=True)
    return "".join(lines)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"
