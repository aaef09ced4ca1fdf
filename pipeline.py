#!/usr/bin/env python3
"""Foundry's main job: the whole pipeline on built-in data, one stage command after another.

    uv run python pipeline.py                 # ~10 minutes on 2 CPU cores; uses a GPU if present
    uv run python pipeline.py --tiny          # a reduced run (~110 CPU-seconds), as the test does
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
import shutil
import sys
import time
from pathlib import Path

from pipeline_stages.corpus import gather_text
from pipeline_stages.run import FULL, TINY, PipelineError, Run, command, run_stage
from pipeline_stages.tasks import write_tasks
from pipeline_stages.training import train_until_halved

MARKER = ".foundry-pipeline"  # marks a folder that --overwrite may replace


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
        help="reduced sizes, stopping at 0.75 x the first loss (about 110 CPU-seconds in all; "
        "also env FOUNDRY_PIPELINE_TINY=1)",
    )
    p.add_argument(
        "--target-ratio",
        type=float,
        default=None,
        help="train until the loss is below this fraction of the first batch's "
        f"(default {FULL.target_ratio}; {TINY.target_ratio} with --tiny)",
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
    if args.target_ratio is not None:
        sizes = dataclasses.replace(sizes, target_ratio=args.target_ratio)
    if not 0 < sizes.target_ratio < 1 or args.holdout_every < 2:
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
    run = Run(out=work, sizes=sizes, target_ratio=sizes.target_ratio)
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
