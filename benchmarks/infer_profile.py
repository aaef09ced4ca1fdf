"""Where a batch-1 decode step of the static engine spends its time (GPU), by kernel.

    python benchmarks/infer_profile.py [--arch mpt|llama] [--compile-decode] [--overlap] [--triton-attention] [--steps 20]

Builds the random-weight 1B model of ``infer_gpu.py`` (bf16), prefills one 64-token prompt,
then, under ``torch.profiler``, runs greedy decode steps of one request through the slot batch,
as ``generate_tokens`` and the server do (``--overlap``: one step queued ahead). Prints the wall
time per step, the GPU kernel time per step, kernels per step, and the kernels taking the most
time: the gap between wall and kernel time is host work between graph replays; the kernel list
says what a fused step would have to remove.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mpt", choices=["mpt", "llama"])
    parser.add_argument("--compile-decode", action="store_true")
    parser.add_argument(
        "--compile-mode",
        default="default",
        choices=["default", "max-autotune-no-cudagraphs"],
        help="with --compile-decode: the decode layers' torch.compile mode "
        "(sets FOUNDRY_DECODE_COMPILE_MODE)",
    )
    parser.add_argument(
        "--overlap", action="store_true", help="greedy steps run one ahead (FOUNDRY_DECODE_OVERLAP)"
    )
    parser.add_argument(
        "--triton-attention",
        action="store_true",
        help="decode attention and cache write in one Triton kernel (FOUNDRY_DECODE_ATTENTION)",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--device", default="cuda", help="cpu with --tiny: a smoke run")
    parser.add_argument("--tiny", action="store_true", help="the tiny fp32 models")
    parser.add_argument(
        "--work-dir", default=str(Path(tempfile.gettempdir()) / "foundry-infer-gpu-bench")
    )
    args = parser.parse_args(argv)
    os.environ["FOUNDRY_DECODE_COMPILE_MODE"] = args.compile_mode
    os.environ["FOUNDRY_DECODE_ATTENTION"] = "triton" if args.triton_attention else "sdpa"
    import infer_gpu_models as M
    import torch
    from foundry_infer import SequenceState
    from foundry_infer.sampling import SamplingParams
    from foundry_infer.slot_engine import SlotEngine
    from torch.profiler import ProfilerActivity, profile

    hf_dir = M.build_models(Path(args.work_dir), args.tiny, args.device)[args.arch]
    engine = SlotEngine(
        hf_dir,
        args.device,
        "float32" if args.tiny else "bfloat16",
        max_batch_size=64,
        max_len=128 + 2 * args.steps,
        compile_decode=args.compile_decode,
    )
    batch = engine.new_batch()  # the path generate and the server take
    batch.overlap = args.overlap
    seq = SequenceState(list(range(100, 164)), 12 + 2 * args.steps, SamplingParams(ignore_eos=True))
    batch.prefill(seq)

    def steps(n: int) -> float:
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            batch.step()
        return (time.perf_counter() - t0) / n

    t0 = time.perf_counter()
    steps(10)  # the first capture (and, with --compile-decode, compilation) happens here
    first = time.perf_counter() - t0
    wall = steps(args.steps)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        steps(args.steps)
    events = [e for e in prof.events() if e.device_type.name == "CUDA"]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    kernel_us = sum(e.device_time for e in events) / args.steps
    mode = f" ({args.compile_mode})" if args.compile_decode else ""
    print(
        f"{args.arch} compile_decode={args.compile_decode}{mode} overlap={args.overlap} "
        f"triton_attention={args.triton_attention} {name} ({engine.name})"
    )
    print(
        f"wall per step {wall * 1e3:.3f} ms; GPU time per step {kernel_us / 1e3:.3f} ms; "
        f"{len(events) / args.steps:.0f} GPU events per step; the first 10 steps (capture, "
        f"compilation) took {first:.1f} s"
    )
    print(
        prof.key_averages().table(
            sort_by="device_time_total", row_limit=args.top, max_name_column_width=90
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
