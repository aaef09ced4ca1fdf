"""Correctness and speed of foundry's Triton attention on one GPU, beside FlexAttention and SDPA.

1. Correctness at real sizes: output and q/k/v gradients of ``triton_attention`` against a
   materialised fp32 reference (mask + ALiBi bias + softmax), for causal, ALiBi, GQA/MQA, sliding
   window, packed sequences and odd head dims.
2. Speed: causal attention forward+backward TFLOP/s at (B8 H16 S2048 D128), (B16 H12 S2048 D64)
   and (B2 H16 S8192 D128), with and without ALiBi, for
     - triton      this project's kernel (ALiBi slopes computed in-kernel)
     - flex        torch.nn.attention.flex_attention, compiled, causal block mask (+ ALiBi score_mod)
     - sdpa-flash  PyTorch SDPA's flash backend (cannot apply ALiBi)
     - sdpa-cudnn  PyTorch SDPA's cuDNN backend (cannot apply ALiBi)
     - sdpa-bias   PyTorch SDPA with an ALiBi bias tensor (efficient/math backend)
   and the ratios the goals are stated in: triton / flex (both with and without ALiBi) >= 1.0,
   triton+ALiBi / sdpa-flash (no ALiBi) >= 1.0.

FLOPs follow FlashAttention's convention: 4*B*H*S^2*D/2 for a causal forward, x3.5 for fwd+bwd.

Examples:
    python benchmarks/triton_attention_check.py
    python benchmarks/triton_attention_check.py --dtype fp16 --skip-correctness
    python benchmarks/triton_attention_check.py --skip-speed          # correctness only
    python benchmarks/triton_attention_check.py --shapes 8,16,2048,128 --rep 200 --fwd
Exit status 1 if a correctness check fails (speed goals are reported, not enforced).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch._dynamo
import torch.nn.functional as F


def _load_kernel_module():
    """foundry_models.attention.triton_function, the Triton attention's entry point."""
    from foundry_models.attention import triton_function

    return triton_function


ta = _load_kernel_module()

DEFAULT_SHAPES = [(8, 16, 2048, 128), (16, 12, 2048, 64), (2, 16, 8192, 128)]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}  # max|err|/max|ref|; x2 for gradients


def alibi_slopes(heads: int, device: str = "cuda") -> torch.Tensor:
    padded = 2 ** math.ceil(math.log2(heads))
    slopes = 1.0 / torch.pow(2.0, torch.arange(1, padded + 1) * (8.0 / padded))
    if padded != heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:heads]
    return slopes.float().to(device)


# ------------------------------------------------------------------------------ correctness


@dataclass
class Check:
    name: str
    batch: int
    seq_len: int
    heads: int
    kv_heads: int
    head_dim: int
    alibi: bool = False
    window: int | None = None
    packed: bool = False


CHECKS = [
    Check("causal D128", 2, 2048, 16, 16, 128),
    Check("causal+alibi D128", 2, 2048, 16, 16, 128, alibi=True),
    Check("causal+alibi D64", 2, 2048, 12, 12, 64, alibi=True),
    Check("gqa 16/4 + alibi + window 512", 2, 2048, 16, 4, 128, alibi=True, window=512),
    Check("mqa 12/1 D64", 2, 2048, 12, 1, 64),
    Check("packed + alibi + gqa 8/2", 2, 2000, 8, 2, 128, alibi=True, packed=True),
    Check("ragged S=1234 D80 + alibi", 2, 1234, 8, 8, 80, alibi=True),
    Check("everything D64 S=3000", 1, 3000, 8, 2, 64, alibi=True, window=700, packed=True),
]


def reference(q, k, v, *, slopes, window, seq_ids):
    """Materialised fp32 causal attention; q (B,T,H,D), k/v (B,T,Hkv,D)."""
    heads, group = q.shape[2], q.shape[2] // k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(group, 1), vf.repeat_interleave(group, 1)
    scores = qf @ kf.transpose(-1, -2) / math.sqrt(q.shape[-1])
    pos = torch.arange(q.shape[1], device=q.device)
    dist = pos[None, :] - pos[:, None]
    visible = (dist <= 0)[None, None]
    if window is not None:
        visible = visible & (-dist <= window)
    if seq_ids is not None:
        visible = visible & (seq_ids[:, :, None] == seq_ids[:, None, :])[:, None]
    if slopes is not None:
        scores = scores + slopes.view(1, heads, 1, 1) * dist.float()
    scores = scores.masked_fill(~visible, float("-inf"))
    return (scores.softmax(-1) @ vf).transpose(1, 2)


def run_check(check: Check, dtype: torch.dtype) -> tuple[bool, dict[str, float]]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    b, t, h, hk, d = check.batch, check.seq_len, check.heads, check.kv_heads, check.head_dim

    def rand(*shape):
        return torch.randn(*shape, device="cuda", generator=gen).to(dtype)

    q, k, v, dout = rand(b, t, h, d), rand(b, t, hk, d), rand(b, t, hk, d), rand(b, t, h, d)
    slopes = alibi_slopes(h) if check.alibi else None
    seq_ids = None
    if check.packed:
        cuts = torch.randint(1, t, (b, 3), device="cuda", generator=gen)
        seq_ids = (torch.arange(t, device="cuda")[None, :, None] >= cuts[:, None, :]).sum(-1)
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    ref_leaves = [x.float().requires_grad_(True) for x in (q, k, v)]
    out = ta.triton_attention(
        *leaves, alibi_slopes=slopes, window=check.window, sequence_id=seq_ids
    )
    out.backward(dout)
    ref = reference(*ref_leaves, slopes=slopes, window=check.window, seq_ids=seq_ids)
    ref.backward(dout.float())
    errors = {"out": _rel(out, ref)}
    for name, mine, theirs in zip("qkv", leaves, ref_leaves, strict=True):
        assert mine.grad is not None and theirs.grad is not None
        errors[f"d{name}"] = _rel(mine.grad, theirs.grad)
    tol = TOLERANCE[dtype]
    ok = all(e <= (tol if n == "out" else 2 * tol) for n, e in errors.items())
    return ok, errors


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()


def correctness(dtype: torch.dtype) -> bool:
    print(f"== correctness ({dtype}, tolerance {TOLERANCE[dtype]} out / x2 grads, vs fp32 ref)")
    all_ok = True
    for check in CHECKS:
        try:
            ok, errors = run_check(check, dtype)
            detail = "  ".join(f"{n} {e:.2e}" for n, e in errors.items())
        except Exception:
            ok, detail = False, "EXCEPTION\n" + traceback.format_exc()
        all_ok &= ok
        print(f"  {'ok  ' if ok else 'FAIL'} {check.name:34s} {detail}")
        torch.cuda.empty_cache()
    return all_ok


# ------------------------------------------------------------------------------ speed


def causal_flops(batch: int, heads: int, seq: int, dim: int, backward: bool) -> float:
    fwd = 4 * batch * heads * seq * seq * dim / 2
    return fwd * (3.5 if backward else 1.0)


def time_ms(fn: Callable[[], object], leaves: list[torch.Tensor], warmup: int, rep: int) -> float:
    from triton.testing import do_bench

    ms = do_bench(fn, warmup=warmup, rep=rep, grad_to_none=leaves, return_mode="mean")
    assert isinstance(ms, float)
    return ms


def impl_runners(batch, heads, seq, dim, dtype, alibi):
    """name -> (forward callable over (q, k, v), layout) for each impl that applies."""
    slopes = alibi_slopes(heads)
    runners: dict[str, tuple[Callable, str]] = {}

    def triton_run(q, k, v):
        return ta.triton_attention(q, k, v, alibi_slopes=slopes if alibi else None)

    runners["triton"] = (triton_run, "bthd")

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    block_mask = create_block_mask(
        lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, seq, seq, device="cuda"
    )

    def alibi_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    def flex_run(q, k, v):
        return flex(q, k, v, score_mod=alibi_mod if alibi else None, block_mask=block_mask)

    runners["flex"] = (flex_run, "bhtd")

    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not alibi:

        def backend_run(backend):
            def run(q, k, v):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            return run

        runners["sdpa-flash"] = (backend_run(SDPBackend.FLASH_ATTENTION), "bhtd")
        runners["sdpa-cudnn"] = (backend_run(SDPBackend.CUDNN_ATTENTION), "bhtd")
    else:
        pos = torch.arange(seq, device="cuda")
        dist = (pos[None, :] - pos[:, None]).float()
        bias = (slopes.view(heads, 1, 1) * dist).masked_fill(dist > 0, float("-inf"))
        bias = bias.to(dtype)[None]

        def sdpa_bias_run(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

        runners["sdpa-bias"] = (sdpa_bias_run, "bhtd")
    return runners


def bench_shape(
    shape, dtype, alibi, warmup, rep, fwd_only
) -> dict[str, tuple[float | None, float | None]]:
    batch, heads, seq, dim = shape
    results: dict[str, tuple[float | None, float | None]] = {}
    gen = torch.Generator(device="cuda").manual_seed(0)
    base = [torch.randn(batch, seq, heads, dim, device="cuda", generator=gen, dtype=dtype)
            for _ in range(4)]  # fmt: skip
    for name, (run, layout) in impl_runners(batch, heads, seq, dim, dtype, alibi).items():
        tensors = [x if layout == "bthd" else x.transpose(1, 2).contiguous() for x in base]
        q, k, v = (x.clone().requires_grad_(True) for x in tensors[:3])
        dout = tensors[3]

        def fwd_bwd(run=run, q=q, k=k, v=v, dout=dout):
            run(q, k, v).backward(dout)

        def fwd(run=run, q=q, k=k, v=v):
            with torch.no_grad():
                run(q, k, v)

        try:
            fwd_bwd()  # compile / autotune outside the timing
            torch.cuda.synchronize()
            ms_fb = time_ms(fwd_bwd, [q, k, v], warmup, rep)
            tflops_f = None
            if fwd_only:
                ms_f = time_ms(fwd, [], warmup, rep)
                tflops_f = causal_flops(batch, heads, seq, dim, False) / ms_f / 1e9
            results[name] = (causal_flops(batch, heads, seq, dim, True) / ms_fb / 1e9, tflops_f)
        except Exception as exc:
            msg = str(exc).splitlines()[0][:200] if str(exc) else ""
            print(f"  {name}: failed: {type(exc).__name__}: {msg}")
            results[name] = (None, None)
        del q, k, v
        torch.cuda.empty_cache()
    return results


def _fmt(x: float | None) -> str:
    return f"{x:7.1f}" if x is not None else "    n/a"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "  n/a"
    mark = "ok" if a >= b else "BELOW"
    return f"{a / b:5.2f}x {mark}"


def speed(shapes, dtype, warmup, rep, fwd_only) -> list[str]:
    print(f"\n== causal fwd+bwd TFLOP/s ({dtype})" + ("; fwd-only in brackets" if fwd_only else ""))
    summary = []
    for shape in shapes:
        batch, heads, seq, dim = shape
        label = f"B{batch} H{heads} S{seq} D{dim}"
        t0 = time.time()
        plain = bench_shape(shape, dtype, False, warmup, rep, fwd_only)
        with_alibi = bench_shape(shape, dtype, True, warmup, rep, fwd_only)
        print(f"-- {label}  ({time.time() - t0:.0f}s incl. compile/autotune)")
        for name, (fb, f) in plain.items():
            print(f"   {name:12s} causal       {_fmt(fb)}  [{_fmt(f)}]")
        for name, (fb, f) in with_alibi.items():
            print(f"   {name:12s} causal+alibi {_fmt(fb)}  [{_fmt(f)}]")
        tri, tri_a = plain["triton"][0], with_alibi["triton"][0]
        print(f"   ratio triton/flex (causal)             {_ratio(tri, plain['flex'][0])}")
        print(f"   ratio triton/flex (alibi)              {_ratio(tri_a, with_alibi['flex'][0])}")
        print(f"   ratio triton+alibi/sdpa-flash (causal) {_ratio(tri_a, plain['sdpa-flash'][0])}")
        print(f"   triton configs: {_chosen_configs()}")
        summary.append(
            f"| {label} | {_fmt(tri)} | {_fmt(plain['flex'][0])} | {_fmt(tri_a)} | "
            f"{_fmt(with_alibi['flex'][0])} | {_fmt(plain['sdpa-flash'][0])} | "
            f"{_ratio(tri, plain['flex'][0])} | {_ratio(tri_a, with_alibi['flex'][0])} | "
            f"{_ratio(tri_a, plain['sdpa-flash'][0])} |"
        )
    return summary


def _chosen_configs() -> str:
    from foundry_models.attention.triton_launch import tuned_configs

    return "; ".join(f"{k}: {v}" for k, v in tuned_configs().items())


def parse_args() -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc[doc.index("Examples:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=[",".join(map(str, s)) for s in DEFAULT_SHAPES],
        help="B,H,S,D tuples (default: the three shapes of the goals)",
    )
    parser.add_argument("--skip-correctness", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--fwd", action="store_true", help="also time the forward pass alone")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms")
    parser.add_argument("--rep", type=int, default=100, help="do_bench repetition time, ms")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible. Run this script on a GPU host.", file=sys.stderr)
        return 2
    try:
        shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes]
        assert all(len(s) == 4 for s in shapes)
    except (ValueError, AssertionError):
        print("error: --shapes takes B,H,S,D tuples such as 8,16,2048,128.", file=sys.stderr)
        return 2
    import triton

    print(
        f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  "
        f"triton {triton.__version__}"
    )
    for knob in ("recompile_limit", "cache_size_limit"):  # one flex compile per shape/score_mod
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)
    dtype = DTYPES[args.dtype]
    ok = True
    if not args.skip_correctness:
        ok = correctness(dtype)
    if not args.skip_speed:
        summary = speed(shapes, dtype, args.warmup, args.rep, args.fwd)
        print(
            "\n| shape | triton | flex | triton+alibi | flex+alibi | sdpa-flash | "
            "triton/flex | triton+alibi/flex+alibi | triton+alibi/sdpa-flash |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(summary))
    print("\ncorrectness:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
