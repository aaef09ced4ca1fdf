"""Stage 1 of pipeline.py: the built-in text (files this project wrote), and the held-out files."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline_stages.run import ROOT, Run

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
    "pipeline_stages/*.py",
)


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
