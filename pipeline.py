#!/usr/bin/env python3
"""Foundry's main job: the whole pipeline on built-in data, one stage command after another.

    uv run python pipeline.py                 # ~10 minutes on 2 CPU cores; uses a GPU if present
    uv run python pipeline.py --tiny          # a reduced run (about 2 minutes), as the test does
    uv run python pipeline.py --out my-run --overwrite

The built-in data is text this project wrote itself: its README, docs, and the source and tests of
its packages (no third-party text). Every ``--holdout-every``-th source file is kept out of
training; the scoring tasks are built from those files at run time. The stages:

 1. gather the built-in text into one JSONL file (and the held-out files apart)
 2. ``foundry-data train-tokenizer``   a byte-level BPE tokenizer sized for the debug model
 3. ``foundry-data convert``           the text as an MDS dataset of fixed-length samples
 4. ``foundry-train``                  the ``debug`` MPT preset, in rounds, until the mean loss
                                       of the last 10 batches is below half the first batch's loss
 5. ``foundry-train export-hf``        a Hugging Face directory (transformers' own MPT class)
 6. ``foundry-eval``                   ICL tasks written from the held-out files
 7. ``foundry-infer export-onnx``      an ONNX graph with a key/value cache
 8. ``foundry-infer generate``         text from the ONNX graph and from the HF directory

It imports no Foundry package: each stage is the command a user would type (printed before it
runs), so the script is also a worked example of the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOSS_KEY = "loss/train/total"
MARKER = ".foundry-pipeline"  # marks a folder that --overwrite may replace
LAST_N = 10  # batches averaged for the "loss fell below the target" check
# Where the built-in text comes from (all of it written by this project).
CORPUS_GLOBS = (
    "README.md",
    "docs/**/*.md",
    "packages/*/README.md",
    "packages/*/src/**/*.py",
    "packages/*/tests/**/*.py",
    "tests/**/*.py",
    "benchmarks/*.py",
    "pipeline.py",
)


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


FULL = Sizes(512, 128, 16, 4e-3, 200, 50, 2000, None, 200, 48)
TINY = Sizes(512, 64, 8, 6e-3, 30, 20, 400, 40, 20, 16)


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


# --- 1. the built-in text -----------------------------------------------------------------------


def corpus_files(max_files: int | None) -> list[Path]:
    """The project's own text files, sorted (``max_files`` keeps an even spread of them)."""
    files = sorted({p for g in CORPUS_GLOBS for p in ROOT.glob(g) if p.is_file()})
    files = [p for p in files if ".venv" not in p.parts and p.stat().st_size > 0]
    if max_files is not None and len(files) > max_files:
        step = len(files) / max_files
        files = [files[int(i * step)] for i in range(max_files)]
    return files


def gather_text(run: Run, holdout_every: int) -> list[Path]:
    """Write corpus/train.jsonl; return the held-out source files (kept out of training)."""
    files = corpus_files(run.sizes.max_files)
    sources = [p for p in files if p.suffix == ".py"]
    held_out = set(sources[holdout_every - 1 :: holdout_every])
    train = [p for p in files if p not in held_out]
    corpus = run.path("corpus")
    corpus.mkdir(parents=True)
    chars = 0
    with (corpus / "train.jsonl").open("w", encoding="utf-8") as f:
        for p in train:
            text = p.read_text(encoding="utf-8")
            chars += len(text)
            f.write(json.dumps({"text": text, "path": str(p.relative_to(ROOT))}) + "\n")
    (corpus / "held_out.txt").write_text(
        "".join(f"{p.relative_to(ROOT)}\n" for p in sorted(held_out))
    )
    run.facts["training text"] = f"{len(train)} files, {chars:,} characters"
    run.facts["held-out files"] = f"{len(held_out)} (listed in corpus/held_out.txt)"
    print(
        f"\n[0] built-in text: {len(train)} files ({chars:,} characters) for training, "
        f"{len(held_out)} source files held out for scoring -> {corpus}",
        flush=True,
    )
    return sorted(held_out)


# --- 4. training until the loss halves ----------------------------------------------------------


def train_config(run: Run, max_batches: int) -> str:
    """The training YAML (the debug preset, fp32 on CPU, bf16 autocast on a GPU)."""
    s = run.sizes
    return f"""\
# Written by pipeline.py: the `debug` MPT preset on the built-in text.
run_name: foundry-pipeline
seed: 17
max_seq_len: {s.seq_len}
model: {{name: mpt, preset: debug}}
tokenizer: {{name: tokenizer}}        # paths are relative to the output folder
train_loader:
  name: pretraining
  dataset: {{local: mds}}
optimizer: {{name: decoupled_adamw, lr: {s.lr}, betas: [0.9, 0.95], weight_decay: 0.0}}
scheduler: {{name: constant_with_warmup, t_warmup: 20ba}}
gradient_clipping: {{clipping_type: norm, clipping_threshold: 1.0}}
max_duration: {max_batches}ba
global_train_batch_size: {s.batch_size}
device_train_microbatch_size: {s.batch_size}
precision: amp_bf16          # CPU runs use fp32
save_folder: checkpoints
save_interval: {max_batches}ba
save_num_checkpoints_to_keep: 1
autoresume: true             # each round continues the previous one
progress_bar: true
callbacks:
  speed_monitor: {{window_size: 10}}
  loss_spike: {{window: 50, spike_ratio: 3.0}}
"""


def read_losses(metrics: Path) -> dict[int, float]:
    """``{batch: training loss}`` from foundry-train's metrics.jsonl."""
    losses: dict[int, float] = {}
    if not metrics.is_file():
        return losses
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if LOSS_KEY in row and row.get("step") is not None:
            losses[int(row["step"])] = float(row[LOSS_KEY])
    return losses


def loss_status(losses: dict[int, float], ratio: float) -> tuple[float, float, float]:
    """(first batch's loss, target, mean of the last LAST_N batches)."""
    steps = sorted(losses)
    start = losses[steps[0]]
    recent = [losses[s] for s in steps[-LAST_N:]]
    return start, ratio * start, sum(recent) / len(recent)


def train_until_halved(run: Run) -> None:
    s = run.sizes
    config = run.path("train.yaml")
    metrics = run.path("checkpoints") / "metrics.jsonl"
    total = s.first_round
    while True:
        config.write_text(train_config(run, total))
        run_stage(
            run, f"train the debug model to batch {total}", [*command("foundry-train"), config.name]
        )
        losses = read_losses(metrics)
        if len(losses) < LAST_N:
            raise PipelineError(f"{metrics} holds {len(losses)} loss values; expected {total}.")
        start, target, recent = loss_status(losses, run.target_ratio)
        print(
            f"    loss: first batch {start:.3f}, mean of the last {LAST_N} batches {recent:.3f}, "
            f"target < {target:.3f}",
            flush=True,
        )
        if recent < target:
            break
        if total >= s.max_batches:
            raise PipelineError(
                f"after {total} batches the loss ({recent:.3f}) is still above {target:.3f} "
                f"({run.target_ratio} x the first batch's {start:.3f}). Raise --max-batches or "
                "lower --target-ratio."
            )
        total = min(total + s.next_rounds, s.max_batches)
    run.facts["batches trained"] = total
    run.facts["tokens trained"] = f"{total * s.batch_size * s.seq_len:,}"
    run.facts["loss"] = (
        f"{start:.3f} (batch 0) -> {recent:.3f} (mean of the last {LAST_N}); "
        f"target < {target:.3f} = {run.target_ratio} x start: reached"
    )
    plot_loss(losses, target, run.target_ratio, run.path("loss_curve.png"))


def plot_loss(losses: dict[int, float], target: float, ratio: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(list(losses), list(losses.values()), color="tab:blue", label="training loss")
    ax.axhline(target, color="tab:red", linestyle="--", label=f"target ({ratio} x the first loss)")
    ax.set_title("pipeline.py: the debug MPT on the project's own text")
    ax.set_xlabel("batch")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# --- 6. scoring tasks from the held-out files ---------------------------------------------------

_WORD_AT_END = re.compile(r"^(.*\S)(\s*\b\w+\W*)$")


def code_lines(files: list[Path]) -> list[list[str]]:
    """Non-trivial lines of each held-out file, in order."""
    out = []
    for p in files:
        lines = [ln.rstrip() for ln in p.read_text(encoding="utf-8").splitlines()]
        out.append([ln for ln in lines if len(ln.strip()) >= 12])
    return out


def lm_rows(per_file: list[list[str]], n: int, rng: random.Random) -> list[dict[str, str]]:
    """language_modeling: the two lines before and a line's start; predict its last word."""
    candidates = []
    for lines in per_file:
        for i in range(2, len(lines)):
            m = _WORD_AT_END.match(lines[i])
            if m and len(m.group(2).strip()) >= 2:
                context = "\n".join([*lines[i - 2 : i], m.group(1)])[-240:]
                candidates.append({"context": context, "continuation": m.group(2)})
    rng.shuffle(candidates)
    return candidates[:n]


def mc_rows(per_file: list[list[str]], n: int, rng: random.Random) -> list[dict[str, object]]:
    """multiple_choice: after two lines, which of four lines comes next (chance 0.25)."""
    pool = [ln for lines in per_file for ln in lines]
    rows = []
    for lines in per_file:
        for i in range(2, len(lines)):
            answer = lines[i]
            wrong = [c for c in rng.sample(pool, 12) if c != answer and c not in lines[i - 2 : i]]
            if len(set(wrong)) < 3:
                continue
            choices = [answer, *list(dict.fromkeys(wrong))[:3]]
            rng.shuffle(choices)
            query = "\n".join(lines[i - 2 : i])[-240:]
            rows.append({"query": query, "choices": choices, "gold": choices.index(answer)})
    rng.shuffle(rows)
    return rows[:n]


def write_tasks(run: Run, held_out: list[Path]) -> Path:
    rng = random.Random(1234)
    per_file = code_lines(held_out)
    folder = run.path("eval")
    folder.mkdir()
    tasks = {
        "next_word": lm_rows(per_file, run.sizes.eval_examples, rng),
        "next_line": mc_rows(per_file, run.sizes.eval_examples, rng),
    }
    for name, rows in tasks.items():
        if not rows:
            raise PipelineError(f"no {name} examples could be built from the held-out files.")
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    (folder / "tasks.yaml").write_text(
        "# Written by pipeline.py from the held-out source files (corpus/held_out.txt).\n"
        "icl_tasks:\n"
        "- label: next_word            # greedy exact match of a line's last word\n"
        "  dataset_uri: next_word.jsonl\n"
        "  icl_task_type: language_modeling\n"
        "  num_fewshot: [0]\n"
        '  continuation_delimiter: ""\n'
        "- label: next_line            # which of four lines follows (chance: 0.25)\n"
        "  dataset_uri: next_line.jsonl\n"
        "  icl_task_type: multiple_choice\n"
        "  num_fewshot: [0]\n"
        '  continuation_delimiter: "\\n"\n'
    )
    run.facts["eval examples"] = ", ".join(f"{k} {len(v)}" for k, v in tasks.items())
    return folder


# --- the whole job ------------------------------------------------------------------------------


def pipeline(run: Run, holdout_every: int) -> None:
    held_out = gather_text(run, holdout_every)
    s, corpus = run.sizes, "corpus/train.jsonl"  # stage commands run in the output folder
    run_stage(run, "train a tokenizer", [*command("foundry-data"), "train-tokenizer", corpus,
              "tokenizer", "--vocab-size", str(s.vocab_size)])  # fmt: skip
    run_stage(run, "convert the text to MDS", [*command("foundry-data"), "convert", corpus, "mds",
              "--tokenizer", "tokenizer", "--concat-tokens", str(s.seq_len)])  # fmt: skip
    train_until_halved(run)
    run_stage(run, "export to Hugging Face", [*command("foundry-train"), "export-hf",
              "checkpoints/latest-rank0.pt", "hf"])  # fmt: skip
    write_tasks(run, held_out)
    run_stage(run, "score on tasks built from the held-out files", [*command("foundry-eval"),
              "hf", "--task-config", "eval/tasks.yaml", "--data-root", "eval", "--gauntlet",
              "none", "--batch-size", "16", "--json", "eval/scores.json", "--markdown",
              "eval/scores.md"])  # fmt: skip
    scores = json.loads(run.path("eval/scores.json").read_text())
    run.scores = {name: task["metrics"] for name, task in scores["tasks"].items()}
    run_stage(run, "export to ONNX", [*command("foundry-infer"), "export-onnx", "hf", "onnx"])
    prompt = "def main(argv: list[str] | None = None) -> int:\n"
    for backend, model in (("onnx", "onnx"), ("torch", "hf")):
        text = run_stage(run, f"generate text ({backend})", [*command("foundry-infer"),
                         "generate", model, "--prompt", prompt, "--max-new-tokens",
                         str(s.new_tokens), "--backend", backend])  # fmt: skip
        run.generated[backend] = text.rstrip("\n")
    run.facts["prompt"] = prompt.rstrip("\n")


def summary(run: Run, wall: float) -> str:
    rel = {
        "training data (MDS)": "mds",
        "tokenizer": "tokenizer",
        "training config": "train.yaml",
        "checkpoints": "checkpoints",
        "metrics": "checkpoints/metrics.jsonl",
        "loss curve": "loss_curve.png",
        "loss + throughput": "checkpoints/loss_throughput.png",
        "HF model": "hf",
        "ONNX model": "onnx",
        "eval tasks": "eval/tasks.yaml",
        "scores": "eval/scores.json",
    }
    lines = ["", "=" * 78, f"Foundry pipeline finished in {wall / 60:.1f} min -> {run.out}", ""]
    lines += [f"  {k:<22} {v}" for k, v in run.facts.items() if k != "prompt"]
    lines += ["", "  written:"]
    lines += [f"    {k:<20} {run.out / v}" for k, v in rel.items() if (run.out / v).exists()]
    lines += ["", "  scores (held-out files; next_line chance = 0.25):"]
    for task, metrics in run.scores.items():
        shown = ", ".join(f"{m}={v:.3f}" for m, v in metrics.items())
        lines.append(f"    {task:<20} {shown}")
    lines += ["", f"  prompt: {run.facts.get('prompt', '')!r}"]
    for backend, text in run.generated.items():
        lines.append(f"  generated ({backend}): {text!r}")
    if len(set(run.generated.values())) == 1 and run.generated:
        lines.append("  (greedy decoding: ONNX Runtime and torch produced the same text)")
    lines += ["", "  stage times:"]
    lines += [f"    {t:6.1f} s  {name}" for name, t in run.stages]
    lines.append("=" * 78)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run Foundry's whole pipeline on built-in data (the project's own text).",
        epilog="examples:\n  uv run python pipeline.py\n  uv run python pipeline.py --tiny "
        "--out /tmp/foundry-tiny --overwrite\n  FOUNDRY_PIPELINE_TINY=1 uv run python pipeline.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--tiny",
        action="store_true",
        default=os.environ.get("FOUNDRY_PIPELINE_TINY", "") not in ("", "0"),
        help="reduced sizes (~2 minutes; also env FOUNDRY_PIPELINE_TINY=1)",
    )
    p.add_argument(
        "--target-ratio",
        type=float,
        default=0.5,
        help="train until the loss is below this fraction of the first batch's (default 0.5)",
    )
    p.add_argument("--max-batches", type=int, default=None, help="give up after this many batches")
    p.add_argument(
        "--holdout-every", type=int, default=6, help="keep every Nth source file out of training"
    )
    return p.parse_args(argv)


def output_problem(out: Path, overwrite: bool) -> str | None:
    """Why ``out`` may not be written (None when it may)."""
    if not out.exists():
        return None
    if not overwrite:
        return f"{out} exists. Pass --overwrite to replace it, or choose another --out."
    if not (out / MARKER).is_file():
        return (
            f"{out} is not a folder written by pipeline.py (it has no {MARKER}), so --overwrite "
            "will not replace it. Choose another --out."
        )
    return None


_PATH_ERRORS = (
    FileExistsError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def user_error_message(exc: BaseException) -> str | None:
    """A user error's one-paragraph message (None for a bug): a Foundry package's error, told by
    its ``foundry_user_error`` class attribute (docs/CONTRIBUTING.md), or an OSError about a path."""
    if getattr(exc, "foundry_user_error", False) is True:
        return str(exc)
    if isinstance(exc, _PATH_ERRORS):
        if exc.filename is None:
            return str(exc)
        return f"'{exc.filename}': {exc.strerror or type(exc).__name__}; check the path."
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except Exception as exc:  # a user error or a bad path: one paragraph, no traceback
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    sizes = TINY if args.tiny else FULL
    if args.max_batches is not None:
        if args.max_batches < 1:
            print("error: --max-batches must be at least 1.", file=sys.stderr)
            return 2
        sizes = dataclasses.replace(sizes, max_batches=args.max_batches)
    if not 0 < args.target_ratio < 1 or args.holdout_every < 2:
        print(
            "error: --target-ratio must be between 0 and 1 and --holdout-every at least 2.",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out).resolve()
    problem = output_problem(out, args.overwrite)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    work = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / MARKER).write_text("written by pipeline.py; --overwrite may replace this folder\n")
    run = Run(out=work, sizes=sizes, target_ratio=args.target_ratio)
    start = time.perf_counter()
    try:
        pipeline(run, args.holdout_every)
    except PipelineError as exc:
        print(f"\nerror: {exc} Partial output is in {work}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; partial output is in {work}.", file=sys.stderr)
        return 130
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    run.out = out
    text = summary(run, time.perf_counter() - start)
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
