"""Train a few batches through `foundry-train` for each compile x FSDP x precision x init combination.

  python packages/foundry-train/tests/gpu_checks/compile_matrix.py --out-dir /tmp/matrix [--parallel 4]

Each combination is its own `python -m foundry_train` process on a tiny random-token MDS dataset
(a 2-layer MPT-125m shape, seq 512, 4 batches). Prints one line per combination, `ok` or the last
line of its error, and writes each run's log to --out-dir. Exit 1 if any combination failed.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from throughput import _assets  # noqa: E402  (writes the tokenizer and a random-token dataset)


def _config(root: Path, name: str, combo: dict[str, str]) -> dict:
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
        "tokenizer": {"name": str(root / "tok")},
        "train_loader": {"dataset": {"local": str(root / "mds")}, "num_workers": 0},
        "max_duration": "4ba",
        "global_train_batch_size": 4,
        "device_train_microbatch_size": 4,
        "precision": "amp_bf16",
        "fsdp_config": fsdp,
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
    ap.add_argument("--timeout", type=int, default=300)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ft-matrix-"))
    _assets(root, 512)
    combos = [
        dict(zip(["attn", "compile", "fsdp", "mp", "init"], c, strict=True))
        for c in itertools.product(args.attn, args.compile, args.fsdp, args.mp, args.init)
    ]

    def one(combo: dict[str, str]) -> tuple[str, str]:
        name = "-".join(combo.values())
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_config(root, name, combo)))
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
            return name, "ok"
        lines = [x for x in log.read_text().splitlines() if x.strip()]
        return name, f"rc {rc}: {lines[-1][:300] if lines else ''}"

    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(one, combos))
    for name, status in results:
        print(f"{name:45s} {status}")
    sys.exit(0 if all(s == "ok" for _, s in results) else 1)


if __name__ == "__main__":
    main()
