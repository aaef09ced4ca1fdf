"""The datasheet's trainer-path rows: `foundry-train` on the shipped pretraining YAMLs.

Two steps, on two machines, as a user works:

  # on a CPU box: Python standard-library source as text -> a BPE tokenizer -> MDS (train, val),
  # all through `foundry-data` (train-tokenizer, convert)
  python benchmarks/shipped_yamls.py prepare --data DIR [--text-mb 24] [--seq 2048]

  # on the GPU host: each preset's shipped YAML through `python -m foundry_train`, overriding only
  # the tokenizer and dataset paths, max_duration, save_folder (and, where given,
  # global_train_batch_size so that a short run holds enough optimizer steps)
  python benchmarks/shipped_yamls.py run --data DIR --out-dir OUT --presets 125m 1b \
      [--steps 30] [--global-batch 0] [--set fp8.recipe=tensorwise] [--tag NAME]

`run` prints and appends to OUT/rows.jsonl one row per preset: the start-up line the trainer
printed, the SpeedMonitor's steady-state tokens/s and MFU (mean of the last --average logged
values; MFU counts 6N + 12*L*d*S FLOPs per token against the card's bf16 peak), the peak memory
the MemoryMonitor logged, the mean loss over the last 20 steps, and the exact command.

  # same preset, other settings, beside a base tag; and a same-run harness baseline row
  python benchmarks/shipped_yamls.py compare OUT/rows.jsonl --base bf16 \
      [--baseline llama.jsonl]   # a `benchmarks/train_throughput.py run --model llama` row

`compare` gives each row's tokens/s relative to the row of the same preset tagged --base, its
mean loss over the last 20 steps relative to that row's (the FP8 loss check: `run --steps 300`
once with `--tag bf16` and once with `--set fp8.recipe=tensorwise --tag fp8`), and its tokens/s
relative to the baseline row where the sizes match (the baseline's `preset`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stdlib_text import stdlib_sources  # noqa: E402

YAMLS = Path(__file__).resolve().parents[1] / "packages/foundry-train/src/foundry_train/yamls"


def _write_text(dest: Path, megabytes: int) -> int:
    """Standard-library .py sources as JSONL documents, up to `megabytes` of text."""
    dest.mkdir(parents=True, exist_ok=True)
    budget, written = megabytes * 2**20, 0
    with open(dest / "stdlib.jsonl", "w", encoding="utf-8") as out:
        for text in stdlib_sources():
            out.write(json.dumps({"text": text}) + "\n")
            written += len(text)
            if written >= budget:
                break
    return written


def prepare(data: Path, text_mb: int, seq: int, vocab: int) -> None:
    text = data / "text"
    n = _write_text(text, text_mb)
    print(f"text: {n / 2**20:.1f} MiB of standard-library source in {text}")
    fd = [sys.executable, "-m", "foundry_data"]
    subprocess.run(
        [*fd, "train-tokenizer", str(text), str(data / "tok"), "--vocab-size", str(vocab),
         "--overwrite", "--no-progress"],
        check=True,
    )  # fmt: skip
    for split in ("train", "val"):
        subprocess.run(
            [*fd, "convert", str(text), str(data / "mds" / split), "--tokenizer",
             str(data / "tok"), "--concat-tokens", str(seq), "--overwrite", "--no-progress"],
            check=True,
        )  # fmt: skip


def _rows(metrics: Path) -> list[dict]:
    if not metrics.exists():
        return []
    return [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]


def _summary(rows: list[dict], average: int) -> dict:
    def last(key: str, n: int) -> float | None:
        vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        return sum(vals[-n:]) / len(vals[-n:]) if vals else None

    memory = {
        k: max(r[k] for r in rows if k in r)
        for k in {k for r in rows for k in r if k.startswith("memory/peak")}
    }
    return {
        "tokens_per_s": last("throughput/tokens_per_sec", average),
        "mfu": last("throughput/device/mfu", average),
        "loss_last20": last("loss/train/total", 20),
        **memory,
    }


def overrides(args: argparse.Namespace, save: Path) -> list[str]:
    """The only keys a run changes in a shipped YAML (plus --set)."""
    return [
        f"tokenizer.name={args.data / 'tok'}",
        f"train_loader.dataset.local={args.data / 'mds'}",
        f"eval_loader.dataset.local={args.data / 'mds'}",
        f"max_duration={args.steps}ba",
        f"save_folder={save}",
        *([f"global_train_batch_size={args.global_batch}"] if args.global_batch else []),
        *args.set,
    ]


def run_preset(args: argparse.Namespace, preset: str) -> dict:
    name = f"{preset}{'-' + args.tag if args.tag else ''}"
    save = args.out_dir / f"run-{name}"
    keys = overrides(args, save)
    yaml = YAMLS / "pretrain" / f"mpt-{preset}.yaml"
    cmd = [sys.executable, "-m", "foundry_train", str(yaml), *keys]
    log = args.out_dir / f"{name}.log"
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:  # the steps logged so far still count
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher's workers too
            proc.wait()
            rc = "timeout"
    lines = log.read_text(errors="replace").splitlines()
    startup = next((x for x in lines if "foundry-train: attention" in x), "")
    row = {
        "preset": preset,
        "tag": args.tag,
        "rc": rc,
        "wall_s": round(time.time() - start, 1),
        "startup": startup.strip(),
        "command": shlex.join(
            ["python", "-m", "foundry_train", str(yaml.relative_to(YAMLS.parents[4])), *keys]
        ),
        **_summary(_rows(save / "metrics.jsonl"), args.average),
    }
    if rc not in (0, "timeout"):
        row["error"] = next((x for x in reversed(lines) if x.strip()), "")[:400]
    if not args.keep_checkpoints:
        row["checkpoint_bytes_removed"] = _drop_checkpoints(save)
    return row


def _drop_checkpoints(save: Path) -> int:
    """Remove a finished row's checkpoints (an mpt-1b one is 15 GB; the GPU host's disk is 64
    GiB), keeping its metrics and config; returns the bytes removed."""
    from foundry_train.checkpointing.resume import INCOMPLETE_DIR, LATEST_NAME, checkpoint_batch

    removed = 0
    for entry in save.glob("*") if save.is_dir() else []:
        if checkpoint_batch(entry) is None and entry.name not in (LATEST_NAME, INCOMPLETE_DIR):
            continue
        files = [entry] if not entry.is_dir() else [f for f in entry.rglob("*") if f.is_file()]
        removed += sum(f.lstat().st_size for f in files)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return removed


def compare(rows_path: Path, base: str, baseline: Path | None) -> None:
    rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()]
    ref_tps = ref_preset = None
    if baseline is not None:
        ref = [json.loads(x) for x in baseline.read_text().splitlines() if x.strip()]
        ref_tps = ref[-1].get("tokens_per_s") if ref else None
        ref_preset = ref[-1].get("preset") if ref else None
    bases = {r["preset"]: r for r in rows if r.get("tag") == base}
    print(
        "| preset | tag | tokens/s | MFU | vs base tokens/s | vs base loss (last 20) | vs baseline |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        b, tps, mfu = bases.get(r["preset"]), r.get("tokens_per_s"), r.get("mfu")
        speed = loss = "-"
        if b is not None and b is not r and tps and b.get("tokens_per_s"):
            speed = f"{tps / b['tokens_per_s']:.3f}x"
        if b is not None and b is not r and r.get("loss_last20") and b.get("loss_last20"):
            loss = f"{(r['loss_last20'] - b['loss_last20']) / b['loss_last20']:+.2%}"
        same_size = r["preset"] == ref_preset
        vs_ref = f"{tps / ref_tps:.2f}x" if tps and ref_tps and same_size else "-"
        cells = [
            r["preset"],
            r.get("tag") or "-",
            f"{tps:,.0f}" if tps else f"rc {r.get('rc')}",
            f"{mfu:.1%}" if mfu else "-",
            speed,
            loss,
            vs_ref,
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="text -> tokenizer -> MDS through foundry-data (CPU)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--text-mb", type=int, default=24)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=32000)
    r = sub.add_parser("run", help="train each preset's shipped YAML through foundry-train (GPU)")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out-dir", type=Path, required=True)
    r.add_argument("--presets", nargs="+", default=["125m", "350m", "1b", "3b"])
    r.add_argument("--steps", type=int, default=30)
    r.add_argument("--global-batch", type=int, default=0, help="0: the YAML's")
    r.add_argument("--average", type=int, default=5, help="logged values averaged (window 10 each)")
    r.add_argument(
        "--set", nargs="*", default=[], help="more KEY=VALUE overrides (e.g. fp8.recipe=tensorwise)"
    )
    r.add_argument("--tag", default="")
    r.add_argument("--timeout", type=int, default=600)
    r.add_argument(
        "--keep-checkpoints", action="store_true", help="leave each run's checkpoints on disk"
    )
    c = sub.add_parser("compare", help="rows against a base tag and a harness baseline")
    c.add_argument("rows", type=Path)
    c.add_argument("--base", default="")
    c.add_argument("--baseline", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "compare":
        compare(args.rows, args.base, args.baseline)
        return
    if args.cmd == "prepare":
        prepare(args.data.resolve(), args.text_mb, args.seq, args.vocab)
        return
    args.data = args.data.resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for preset in args.presets:
        row = run_preset(args, preset)
        print(json.dumps(row), flush=True)
        with open(args.out_dir / "rows.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
