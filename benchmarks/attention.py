"""Attention forward+backward throughput on one GPU: foundry's `flash` and `triton` against PyTorch.

Every implementation runs in the same process on the same inputs (bf16, causal), with and
without ALiBi where it has a way to apply it:

    sdpa-flash        torch SDPA, FlashAttention-2 backend (no ALiBi)
    sdpa-cudnn        torch SDPA, cuDNN backend (no ALiBi)
    sdpa+alibi-bias   torch SDPA with a materialised (H, S, S) ALiBi + causal bias tensor
    flex / flex+alibi FlexAttention (torch.compile'd), causal block mask, ALiBi as a score_mod
    flash / flash+alibi    foundry attn_impl="flash" (flash-attn-4 via flash_attn.cute)
    triton / triton+alibi  foundry attn_impl="triton" (this project's Triton kernel)

TFLOP/s count causal attention as half the full matmul work: forward 2 * 2 * B * H * S^2 * D / 2,
backward 2.5x the forward. An implementation that cannot run prints "unavailable: <reason>".
The goal ratios of the foundry-models issue are printed after the table.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SHAPES = [(8, 16, 2048, 128), (16, 12, 2048, 64), (2, 16, 8192, 128)]  # (B, H, S, D)
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Impl:
    name: str
    layout: str  # "bhsd" (SDPA/Flex) or "bshd" (foundry)
    build: Callable[[int, int, int, int], Fn]  # (B, H, S, D) -> fn(q, k, v)


def _slopes(h: int) -> torch.Tensor:
    from foundry_models.attention import alibi_slopes

    return alibi_slopes(h, 8.0, device="cuda")


def _sdpa(backend_name: str) -> Callable[[int, int, int, int], Fn]:
    def build(b: int, h: int, s: int, d: int) -> Fn:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)

        def fn(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        return fn

    return build


def _sdpa_alibi(b: int, h: int, s: int, d: int) -> Fn:
    pos = torch.arange(s, device="cuda")
    dist = (pos[:, None] - pos[None, :]).float()
    bias = -_slopes(h)[:, None, None] * dist  # (H, S, S)
    bias = bias.masked_fill(dist < 0, float("-inf")).to(torch.bfloat16)[None]

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    return fn


def _flex(alibi: bool) -> Callable[[int, int, int, int], Fn]:
    def build(b: int, h: int, s: int, d: int) -> Fn:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def causal(b_, h_, q_idx, kv_idx):
            return q_idx >= kv_idx

        mask = create_block_mask(causal, B=None, H=None, Q_LEN=s, KV_LEN=s, device="cuda")
        slopes = _slopes(h)

        def alibi_mod(score, b_, h_, q_idx, kv_idx):
            return score - slopes[h_] * (q_idx - kv_idx)

        compiled = torch.compile(flex_attention, dynamic=False)
        score_mod = alibi_mod if alibi else None

        def fn(q, k, v):
            return compiled(q, k, v, score_mod=score_mod, block_mask=mask)

        return fn

    return build


def _foundry(impl: str, alibi: bool) -> Callable[[int, int, int, int], Fn]:
    def build(b: int, h: int, s: int, d: int) -> Fn:
        from foundry_models.attention import attention

        slopes = _slopes(h) if alibi else None

        def fn(q, k, v):
            return attention(q, k, v, impl=impl, causal=True, alibi_slopes=slopes)  # type: ignore[arg-type]

        return fn

    return build


IMPLS = [
    Impl("sdpa-flash", "bhsd", _sdpa("FLASH_ATTENTION")),
    Impl("sdpa-cudnn", "bhsd", _sdpa("CUDNN_ATTENTION")),
    Impl("sdpa+alibi-bias", "bhsd", _sdpa_alibi),
    Impl("flex", "bhsd", _flex(False)),
    Impl("flex+alibi", "bhsd", _flex(True)),
    Impl("flash", "bshd", _foundry("flash", False)),
    Impl("flash+alibi", "bshd", _foundry("flash", True)),
    Impl("triton", "bshd", _foundry("triton", False)),
    Impl("triton+alibi", "bshd", _foundry("triton", True)),
]


def _inputs(layout: str, b: int, h: int, s: int, d: int, seed: int = 0) -> Inputs:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    shape = (b, h, s, d) if layout == "bhsd" else (b, s, h, d)
    return tuple(  # type: ignore[return-value]
        torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
        for _ in range(3)
    )


def _time_ms(fn: Fn, inputs: Inputs, warmup: int, iters: int) -> float:
    q, k, v = inputs
    grad = torch.randn_like(fn(q, k, v))
    for _ in range(warmup):
        torch.autograd.grad(fn(q, k, v), (q, k, v), grad)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        torch.autograd.grad(fn(q, k, v), (q, k, v), grad)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def _tflops(b: int, h: int, s: int, d: int, ms: float) -> float:
    forward = 4 * b * h * s * s * d / 2  # causal: half the score matrix
    return forward * 3.5 / (ms * 1e-3) / 1e12


def _error_vs_reference(impl: Impl, fn: Fn, inputs: Inputs) -> float:
    """Max |out - fp32 reference| of one forward (the reference is foundry's SDPA path)."""
    from foundry_models.attention import attention

    with torch.no_grad():
        out = fn(*inputs).float()
        q, k, v = (x.float() for x in inputs)
        if impl.layout == "bhsd":
            q, k, v, out = (x.transpose(1, 2) for x in (q, k, v, out))
        slopes = _slopes(q.shape[2]) if "alibi" in impl.name else None
        ref = attention(q, k, v, impl="torch", causal=True, alibi_slopes=slopes)
        return (out - ref).abs().max().item()


def run(
    shapes, impls, warmup: int, iters: int, errors: dict[str, float | str]
) -> dict[str, list[float | str]]:
    """TFLOP/s per impl and shape; `errors` gets each impl's forward error at the first shape."""
    results: dict[str, list[float | str]] = {}
    for impl in impls:
        row: list[float | str] = []
        for i, (b, h, s, d) in enumerate(shapes):
            try:
                fn = impl.build(b, h, s, d)
                inputs = _inputs(impl.layout, b, h, s, d)
                ms = _time_ms(fn, inputs, warmup, iters)
                row.append(_tflops(b, h, s, d, ms))
                if i == 0:
                    errors[impl.name] = _error_vs_reference(impl, fn, inputs)
            except Exception as exc:  # report and go on: one broken impl must not stop the run
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                row.append(f"unavailable: {type(exc).__name__}: {reason[:120]}")
                if "--debug" in sys.argv:
                    traceback.print_exc()
            finally:
                torch.cuda.empty_cache()
            print(f"  {impl.name:<16} B{b} H{h} S{s} D{d}: {_cell(row[-1])}", file=sys.stderr)
        results[impl.name] = row
    return results


def _cell(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.0f}"


def _ratio(results, num: str, den: str, i: int) -> float | None:
    a, b = results.get(num, [None] * (i + 1))[i], results.get(den, [None] * (i + 1))[i]
    if isinstance(a, float) and isinstance(b, float) and b > 0:
        return a / b
    return None


GOALS = [
    ("flash+alibi", "flash", 0.9, "`flash` with ALiBi vs flash-attn-4 without ALiBi"),
    ("triton", "flex", 1.0, "`triton` vs FlexAttention (causal)"),
    ("triton+alibi", "flex+alibi", 1.0, "`triton` with ALiBi vs FlexAttention with ALiBi"),
    ("triton+alibi", "sdpa-flash", 1.0, "`triton` with ALiBi vs SDPA flash without ALiBi"),
]


def report(shapes, results, errors: dict[str, float | str]) -> None:
    names = [f"B{b} H{h} S{s} D{d}" for b, h, s, d in shapes]
    print(
        f"\nfwd+bwd TFLOP/s, bf16, causal, on {torch.cuda.get_device_name()}, "
        f"torch {torch.__version__}\n"
    )
    print("| impl | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(_cell(c) for c in row) + " |")
    print("\n| goal | target | " + " | ".join(names) + " | met |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for num, den, target, label in GOALS:
        ratios = [_ratio(results, num, den, i) for i in range(len(shapes))]
        cells = [f"{r:.2f}x" if r is not None else "n/a" for r in ratios]
        met = "n/a" if None in ratios else ("yes" if min(ratios) >= target else "NO")  # type: ignore[type-var]
        print(f"| {label} | >= {target}x | " + " | ".join(cells) + f" | {met} |")
    b, h, s, d = shapes[0]
    print(f"\nforward max |out - fp32 SDPA reference| at B{b} H{h} S{s} D{d} (bf16 inputs):\n")
    print("| impl | max abs error |\n|---|---|")
    for name, err in errors.items():
        print(f"| {name} | {err:.2e} |" if isinstance(err, float) else f"| {name} | {err} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  python benchmarks/attention.py\n"
            "  python benchmarks/attention.py --only flash flash+alibi triton triton+alibi\n"
            "  python benchmarks/attention.py --shape 4 16 4096 128 --iters 20"
        ),
    )
    parser.add_argument("--iters", type=int, default=30, help="timed iterations (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations (default 5)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=4,
        action="append",
        metavar=("B", "H", "S", "D"),
        help="add a shape (repeatable); default: the three issue shapes",
    )
    parser.add_argument(
        "--only", nargs="+", choices=[i.name for i in IMPLS], help="run only these impls"
    )
    parser.add_argument("--debug", action="store_true", help="print tracebacks of failures")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU. Run it on a GPU host.", file=sys.stderr)
        return 2
    shapes = [tuple(s) for s in args.shape] if args.shape else SHAPES
    impls = [i for i in IMPLS if not args.only or i.name in args.only]
    errors: dict[str, float | str] = {}
    results = run(shapes, impls, args.warmup, args.iters, errors)
    report(shapes, results, errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
