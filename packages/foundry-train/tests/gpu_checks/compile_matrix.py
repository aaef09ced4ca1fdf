"""Train a few batches through `foundry-train` for each compile x FSDP x precision x init combination.

  python packages/foundry-train/tests/gpu_checks/compile_matrix.py --out-dir /tmp/matrix [--parallel 4]
      [--accum 1 2] [--compile none model blocks] [--data DIR]

Each combination is its own `python -m foundry_train` process (a 2-layer MPT-125m shape, seq 512,
--steps batches of 4 samples per micro-batch, --accum micro-batches per batch) on a tiny
random-token MDS dataset, or with --data on the tokenizer and MDS that
`benchmarks/shipped_yamls.py prepare` wrote. Prints one line per combination, `ok` or the last line
of its error, with the mean loss of the last two steps; where `none` is among --compile, each
compiled run's loss is also given relative to the uncompiled run of the same settings. Writes each
run's log to --out-dir. Exit 1 if any combination failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from throughput import _assets  # noqa: E402  (writes the tokenizer and a random-token dataset)


def _config(root: Path, name: str, combo: dict[str, str], data: Path, steps: int) -> dict:
    fsdp = None
    if combo["fsdp"] != "none":
        # single_gpu: wrap keeps FSDP on one GPU (a one-GPU run skips the wrapper by default)
        fsdp = {
            "sharding_strategy": combo["fsdp"],
            "mixed_precision": combo["mp"],
            "single_gpu": "wrap",
        }
    return {
        "run_name": name,
        "max_seq_len": 512,
        "model": {
            "name": "mpt",
            "preset": "125m",
            "init_device": combo["init"],
            "config_overrides": {"n_layers": 2, "attn_config": {"attn_impl": combo["attn"]}},
        },
        "compile": combo["compile"],
        "tokenizer": {"name": str(data / "tok")},
        "train_loader": {
            "dataset": {"local": str(data / "mds"), "split": "train"},
            "num_workers": 0,
        },
        "max_duration": f"{steps}ba",
        "global_train_batch_size": 4 * int(combo["accum"]),
        "device_train_microbatch_size": 4,
        "precision": "amp_bf16",
        "fsdp_config": fsdp,
        "optimizer": {"name": "decoupled_adamw", "lr": 1.0e-3},
        "callbacks": {"plot": False},
        "save_folder": str(root / f"run-{name}"),
        "save_interval": "100000ba",
        "launcher": {"nproc": 1},
        "progress_bar": False,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--attn", nargs="+", default=["torch"])
    ap.add_argument("--compile", nargs="+", default=["model", "blocks"])
    ap.add_argument("--fsdp", nargs="+", default=["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD"])
    ap.add_argument("--mp", nargs="+", default=["PURE", "DEFAULT", "FULL"])
    ap.add_argument("--init", nargs="+", default=["meta", "cpu"])
    ap.add_argument("--accum", nargs="+", default=["2"], help="micro-batches per batch")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--data", type=Path, default=None, help="shipped_yamls.py prepare's folder")
    ap.add_argument("--timeout", type=int, default=300)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ft-matrix-"))
    if args.data is None:
        _assets(root, 512)
        (root / "mds").rename(root / "mds-train")
        (root / "mds").mkdir()
        (root / "mds-train").rename(root / "mds" / "train")
    data = args.data or root
    keys = ["attn", "compile", "fsdp", "mp", "init", "accum"]
    combos = [
        dict(zip(keys, c, strict=True))
        for c in itertools.product(
            args.attn, args.compile, args.fsdp, args.mp, args.init, args.accum
        )
    ]

    def one(combo: dict[str, str]) -> tuple[str, str]:
        name = "-".join(combo.values())
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_config(root, name, combo, data, args.steps)))
        log = args.out_dir / f"{name}.log"
        try:
            with open(log, "w") as f:
                rc = subprocess.run(
                    [sys.executable, "-m", "foundry_train", str(path)],
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    timeout=args.timeout,
                ).returncode
        except subprocess.TimeoutExpired:
            return name, "timeout"
        if rc == 0:
            return name, "ok"  # the loss is read from the run's metrics below
        lines = [x for x in log.read_text().splitlines() if x.strip()]
        return name, f"rc {rc}: {lines[-1][:300] if lines else ''}"

    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(one, combos))
    losses = {name: _final_loss(root / f"run-{name}") for name, _ in results}
    for combo, (name, status) in zip(combos, results, strict=True):
        loss = losses[name]
        ref = losses.get("-".join({**combo, "compile": "none"}.values()))
        text = f"loss {loss:.4f}" if loss is not None else "no loss"
        if loss is not None and ref is not None and combo["compile"] != "none":
            text += f" ({(loss - ref) / ref:+.2%} vs compile none)"
        print(f"{name:50s} {status:6s} {text}")
    sys.exit(0 if all(s == "ok" for _, s in results) else 1)


def _final_loss(run: Path) -> float | None:
    """Mean training loss of the last two logged steps."""
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return None
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    vals = [r["loss/train/total"] for r in rows if "loss/train/total" in r]
    return sum(vals[-2:]) / len(vals[-2:]) if vals else None


if __name__ == "__main__":
    main()
