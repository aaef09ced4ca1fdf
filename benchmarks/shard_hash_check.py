"""Benchmark: what checking shard hashes (and token ids) costs foundry-train's data loader.

foundry-train checks every shard against its hash in index.json (xxh64) the first time a process
opens it, and every sample's token ids against the model's vocabulary (``train_loader.
verify_shard_hashes``, issue 20). This measures the loader's tokens/s over a whole epoch of a
pretraining dataset three ways, in the same run:

- ``none``: neither check (``verify_shard_hashes: false``, no vocabulary);
- ``hash``: the shard hash check only;
- ``hash+vocab``: both, as training runs by default.

The dataset is written with foundry-data's own MDS writer (default hashes sha1 + xxh64, 64 MiB
shards, uncompressed) from random token ids below the vocabulary, ``--size-mb`` of shards. Its
files are read once first, so every run finds them in the page cache: the hash is then pure CPU
(its worst case; from a cold disk the read would dominate both). Each run is a fresh process
(a fresh loader: each shard is hashed once per process), the variants interleaved, ``--repeat``
rounds; the fastest run of each variant is reported, with the ratio to ``none``, by wall time and
by the process's CPU time (all its threads), which a busy shared machine disturbs less.

Run (from the repository root; about 2 minutes for 300 MB on 2 cores):

    python benchmarks/shard_hash_check.py --size-mb 300 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 50368
SEQ = 2048
VARIANTS = ("none", "hash", "hash+vocab")


def write_dataset(out: Path, size_mb: int) -> int:
    """Random pretraining samples of SEQ int32 tokens, ``size_mb`` MB of shards; the count."""
    import numpy as np
    from foundry_data import PRETRAINING_COLUMNS
    from foundry_data.mds_options import DEFAULT_HASHES
    from foundry_data.mds_writer import MDSShardWriter

    writer = MDSShardWriter(
        out,
        columns=PRETRAINING_COLUMNS,
        compression=None,
        hashes=sorted(DEFAULT_HASHES),
        size_limit=64 << 20,
    )
    rng = np.random.default_rng(0)
    count = size_mb * 1_000_000 // (SEQ * 4)
    for _ in range(count):
        writer.write({"tokens": rng.integers(0, VOCAB, SEQ, dtype=np.int32)})
    writer.finish()
    return count


def measure(dataset: str, variant: str) -> dict[str, float]:
    """One epoch through build_dataloader (num_workers 0, as on a CPU host)."""
    from foundry_train.config.sections import LoaderConfig
    from foundry_train.data.loader import build_dataloader

    loader = LoaderConfig.model_validate(
        {
            "dataset": {"local": dataset},
            "num_workers": 0,
            "verify_shard_hashes": variant != "none",
        }
    )
    dl = build_dataloader(
        loader,
        device_batch_size=8,
        max_seq_len=SEQ,
        pad_token_id=0,
        vocab_size=VOCAB if variant == "hash+vocab" else None,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    tokens = 0
    for batch in dl:
        tokens += int(batch["input_ids"].numel())
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "tokens_per_cpu_s": tokens / cpu}  # fmt: skip


def hash_all(dataset: Path) -> float:
    """CPU seconds to check every shard of ``dataset`` once, as the loader does (best of 3)."""
    from foundry_data import shard_file_matches

    shards = json.loads((dataset / "index.json").read_text())["shards"]
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for shard in shards:
            info = shard["raw_data"]
            assert shard_file_matches(str(dataset / info["basename"]), info["hashes"]) == (
                "xxh64",
                True,
            )
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--measure", nargs=2, metavar=("DATASET", "VARIANT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    with tempfile.TemporaryDirectory(prefix="hash-bench-") as tmp:
        dataset = Path(tmp) / "data"
        samples = write_dataset(dataset, args.size_mb)
        for shard in sorted(dataset.glob("shard.*")):
            shard.read_bytes()  # into the page cache
        hash_cpu = hash_all(dataset)
        best: dict[str, float] = {}
        best_cpu: dict[str, float] = {}
        for round_ in range(args.repeat):
            for variant in VARIANTS:
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", str(dataset), variant],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                row = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"round {round_ + 1} {variant:>10}: {row['tokens_per_s'] / 1e6:8.2f}M tokens/s "
                      f"({row['seconds']:.2f} s), {row['tokens_per_cpu_s'] / 1e6:8.2f}M tokens "
                      "per CPU-s", flush=True)  # fmt: skip
                best[variant] = max(best.get(variant, 0.0), row["tokens_per_s"])
                best_cpu[variant] = max(best_cpu.get(variant, 0.0), row["tokens_per_cpu_s"])
        mb = sum(p.stat().st_size for p in dataset.glob("shard.*")) / 1e6
    print(f"\n{samples:,} samples of {SEQ} tokens, {mb:.0f} MB in 64 MiB shards; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; best of {args.repeat}:")  # fmt: skip
    epoch_cpu = samples * SEQ / best_cpu["none"]
    print(f"  checking every shard once (xxh64, from the page cache): {hash_cpu:.3f} CPU-s, "
          f"{mb / 1e3 / hash_cpu:.1f} GB/s; {hash_cpu / epoch_cpu:.1%} of an unchecked epoch's "
          f"{epoch_cpu:.2f} CPU-s")  # fmt: skip
    for variant in VARIANTS:
        ratio, cpu_ratio = best[variant] / best["none"], best_cpu[variant] / best_cpu["none"]
        print(f"  {variant:>10}: {best[variant] / 1e6:8.2f}M tokens/s ({ratio:.3f}x of none), "
              f"{best_cpu[variant] / 1e6:8.2f}M tokens/CPU-s ({cpu_ratio:.3f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
