"""Tokens/s and MFU of the shipped MPT presets on one GPU (a GPU check for the lead).

  python packages/foundry-train/tests/gpu_checks/throughput.py --presets 125m 1b --steps 30

Writes a random-token MDS dataset (seq 2048) and a small tokenizer to a temp dir, trains each
preset for --steps batches with `launcher.nproc=1` and prints the SpeedMonitor's steady-state
tokens/s and MFU (6N + 12 L d S FLOPs per token, peak 989 TFLOP/s) with the card name.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

MICRO = {"125m": 32, "350m": 16, "760m": 8, "1b": 8, "3b": 4, "7b": 2}


def _assets(root: Path, seq: int) -> None:
    from streaming import MDSWriter
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(
        ["throughput check text"],
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]),
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(
        root / "tok"
    )
    rng = np.random.default_rng(0)
    with MDSWriter(out=str(root / "mds"), columns={"tokens": "ndarray:int32"}) as w:
        for _ in range(4096):
            w.write({"tokens": rng.integers(0, 50000, seq, dtype=np.int32)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["125m", "1b"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--compile", choices=["none", "blocks", "model"], default="blocks")
    ap.add_argument("--attn-impl", choices=["torch", "flash", "triton"], default="triton")
    ap.add_argument("--loss-chunk", type=int, default=8192, help="0: plain loss")
    ap.add_argument(
        "--fsdp",
        choices=["none", "NO_SHARD", "FULL_SHARD"],
        default="FULL_SHARD",
        help="fsdp_config.sharding_strategy (none: no fsdp_config, plain single-GPU training)",
    )
    ap.add_argument("--micro-batch", type=int, default=0, help="0: the preset's default")
    ap.add_argument("--out", default="", help="append a JSON line per preset to this file")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ft-throughput-"))
    _assets(root, args.seq)
    card = torch.cuda.get_device_name(0)
    for preset in args.presets:
        mb = args.micro_batch or MICRO.get(preset, 4)
        cfg = {
            "run_name": f"tput-{preset}",
            "max_seq_len": args.seq,
            "model": {
                "name": "mpt",
                "preset": preset,
                "init_device": "meta",
                "config_overrides": {
                    "attn_config": {"attn_impl": args.attn_impl},
                    "loss_chunk_size": args.loss_chunk or None,
                },
            },
            "compile": args.compile,
            "tokenizer": {"name": str(root / "tok")},
            "train_loader": {"dataset": {"local": str(root / "mds")}},
            "max_duration": f"{args.steps}ba",
            "global_train_batch_size": mb,
            "device_train_microbatch_size": mb,
            "precision": "amp_bf16",
            "fsdp_config": None
            if args.fsdp == "none"
            else {"sharding_strategy": args.fsdp, "mixed_precision": "PURE"},
            "callbacks": {"speed_monitor": {"window_size": 10}, "plot": False},
            "save_folder": str(root / f"run-{preset}"),
            "save_interval": "100000ba",
            "launcher": {"nproc": 1},
            "progress_bar": False,
        }
        path = root / f"{preset}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        subprocess.run([sys.executable, "-m", "foundry_train", str(path)], check=True)
        rows = [
            json.loads(x)
            for x in (root / f"run-{preset}" / "metrics.jsonl").read_text().splitlines()
        ]
        tps = [r["throughput/tokens_per_sec"] for r in rows if "throughput/tokens_per_sec" in r]
        mfu = [r["throughput/device/mfu"] for r in rows if "throughput/device/mfu" in r]
        label = (
            f"{card} mpt-{preset} seq {args.seq} mb {mb} {args.attn_impl} compile={args.compile}"
            f" loss_chunk={args.loss_chunk} fsdp={args.fsdp}"
        )
        if not (tps and mfu):
            print(f"{label}: no throughput logged")
            continue
        print(f"{label}: {tps[-1]:,.0f} tokens/s, MFU {mfu[-1]:.3f}")
        if args.out:
            row = {"label": label, "card": card, "preset": preset, "micro_batch": mb}
            row.update(vars(args), tokens_per_s=tps[-1], mfu=mfu[-1])
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
