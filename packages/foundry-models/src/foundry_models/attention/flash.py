"""`attn_impl="flash"`: FlashAttention-4 (`flash_attn.cute`) or, failing that, flash-attn 2.

FlashAttention-4 (PyPI `flash-attn-4`, Hopper/Blackwell) gets ALiBi through a `score_mod`
compiled into the kernel: the slope is computed from the head index (MPT's formula, interleaved
for non-power-of-two head counts), so no bias tensor is read. Packed sequences (`sequence_id`)
run through the variable-length entry point, one segment per run of equal ids. flash-attn 2 has
ALiBi slopes, windows and varlen natively. Both are optional: `pip install
"foundry-models[flash]"`.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from foundry_models.attention.alibi import slope_parameters
from foundry_models.attention.flash_op import custom_op_enabled, fa4_attention
from foundry_models.errors import AttentionUnavailableError

__all__ = ["INSTALL_HINT", "flash_attention", "flash_backend", "flash_status", "varlen_layout"]

INSTALL_HINT = (
    "attn_impl 'flash' needs FlashAttention: install flash-attn-4 with "
    '`pip install "foundry-models[flash]"` (Hopper/Blackwell GPUs, CUDA 12.9+), or on Ampere '
    "the flash-attn 2 package (`pip install flash-attn --no-build-isolation`). Otherwise set "
    "attn_impl to 'auto' (picks what runs here), 'triton' or 'torch'."
)
_LABELS = {"fa4": "flash-attn-4", "fa2": "flash-attn 2"}


@functools.cache
def flash_status(device_index: int = 0) -> tuple[str | None, str]:
    """('fa4' | 'fa2', 'flash-attn-4, sm90') when FlashAttention runs on this GPU, else (None, why).

    flash-attn-4 (module `flash_attn.cute`) runs on sm90/sm100 (Hopper, Blackwell) and is tried
    first there; flash-attn 2 runs on sm80 and newer.
    """
    if not torch.cuda.is_available():
        return None, "no CUDA GPU is visible"
    major, minor = torch.cuda.get_device_capability(device_index)
    arch = f"sm{major}{minor}"
    order = [name for name, ok in (("fa4", major in (9, 10)), ("fa2", major >= 8)) if ok]
    if not order:
        return None, f"this GPU is {arch}; FlashAttention needs sm80 or newer"
    errors: list[str] = []
    for name in order:
        try:
            if name == "fa4":
                import flash_attn.cute  # noqa: F401  # pyright: ignore[reportMissingImports]
            else:
                from flash_attn import (  # noqa: F401  # pyright: ignore[reportMissingImports]
                    flash_attn_func,
                )
            return name, f"{_LABELS[name]}, {arch}"
        except ImportError as exc:
            errors.append(f"{_LABELS[name]}: {exc}")
    return None, f"{arch}; import errors: {'; '.join(errors)}"


def flash_backend(device_index: int = 0) -> str:
    """'fa4' or 'fa2', whichever can run on this GPU; raises `AttentionUnavailableError`."""
    backend, why = flash_status(device_index)
    if backend is None:
        raise AttentionUnavailableError(f"{INSTALL_HINT} ({why}.)")
    return backend


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    window: int | None = None,
    sequence_id: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    alibi_bias_max: float | None = None,
) -> torch.Tensor:
    """FlashAttention on q (B, T, H, D), k/v (B, S, Hkv, D); semantics of `attention.dispatch.attention`.

    `alibi_bias_max`, where the caller built `alibi_slopes` with MPT's formula and knows it, spares
    flash-attn-4 reading it back from the slopes (a device sync, and a graph break under compile).
    """
    if q.device.type != "cuda":
        raise AttentionUnavailableError(
            f"attn_impl='flash' runs on CUDA tensors, got {q.device}; use attn_impl='torch' here."
        )
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"attn_impl='flash' needs fp16 or bf16 inputs, got {q.dtype}")
    backend = flash_backend(q.device.index or 0)
    run = functools.partial(_fa4, alibi_bias_max=alibi_bias_max) if backend == "fa4" else _fa2
    if sequence_id is None:
        return run(q, k, v, causal, alibi_slopes, window, softmax_scale, None)
    b, t = q.shape[:2]
    cu_seqlens, max_len = _per_tensor("varlen", sequence_id, varlen_layout)
    fq, fk, fv = (x.reshape(b * t, *x.shape[2:]) for x in (q, k, v))
    out = run(fq, fk, fv, causal, alibi_slopes, window, softmax_scale, (cu_seqlens, max_len))
    return out.reshape(q.shape)


_T = TypeVar("_T")
_PER_TENSOR: dict[tuple[str, int], tuple[weakref.ref[torch.Tensor], Any]] = {}


def _per_tensor(kind: str, tensor: torch.Tensor, compute: Callable[[torch.Tensor], _T]) -> _T:
    """`compute(tensor)`, remembered while `tensor` lives.

    Every layer of a forward pass passes the same slopes / sequence ids; their host-side
    summaries (which need a device sync) are computed once instead of once per layer.
    """
    key = (kind, id(tensor))
    hit = _PER_TENSOR.get(key)
    if hit is not None and hit[0]() is tensor:
        return hit[1]
    value = compute(tensor)
    for stale in [k for k, (ref, _) in _PER_TENSOR.items() if ref() is None]:
        del _PER_TENSOR[stale]
    _PER_TENSOR[key] = (weakref.ref(tensor), value)
    return value


def varlen_layout(sequence_id: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cumulative segment boundaries (int32) over the flattened (B*T) tokens and the longest segment.

    A segment is a run of equal ids within one row; each row starts a new segment.
    """
    b, t = sequence_id.shape
    starts = torch.ones_like(sequence_id, dtype=torch.bool)
    starts[:, 1:] = sequence_id[:, 1:] != sequence_id[:, :-1]
    begins = starts.reshape(-1).nonzero().squeeze(1)
    end = torch.tensor([b * t], device=begins.device, dtype=begins.dtype)
    cu_seqlens = torch.cat([begins, end]).to(torch.int32)
    max_len = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return cu_seqlens, max_len


def _fa4(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    alibi_slopes: torch.Tensor | None,
    window: int | None,
    softmax_scale: float | None,
    varlen: tuple[torch.Tensor, int] | None,
    alibi_bias_max: float | None = None,
) -> torch.Tensor:
    alibi = None
    if alibi_slopes is not None:
        length = q.shape[1] if varlen is None else varlen[1]
        alibi = _alibi_parameters(alibi_slopes, alibi_bias_max, length)
        k, v = _expand_kv_heads(q, k, v)
    if varlen is None and custom_op_enabled():  # the same kernels, traceable by torch.compile
        return fa4_attention(
            q, k, v, causal=causal, window=window, softmax_scale=softmax_scale, alibi=alibi
        )
    from flash_attn.cute import (  # pyright: ignore[reportMissingImports]
        flash_attn_func,
        flash_attn_varlen_func,
    )

    kwargs: dict[str, Any] = {
        "softmax_scale": softmax_scale,
        "causal": causal,
        "window_size": (window, 0 if causal else window) if window is not None else (None, None),
    }
    if alibi is not None:
        kwargs["score_mod"], kwargs["score_mod_bwd"] = _alibi_score_mods(*alibi, causal)
    if varlen is None:
        result = flash_attn_func(q, k, v, **kwargs)
    else:
        cu, max_len = varlen
        result = flash_attn_varlen_func(
            q,
            k,
            v,
            cu_seqlens_q=cu,
            cu_seqlens_k=cu,
            max_seqlen_q=max_len,
            max_seqlen_k=max_len,
            **kwargs,
        )
    return result[0] if isinstance(result, tuple) else result


def _alibi_parameters(
    slopes: torch.Tensor, bias_max: float | None, length: int
) -> tuple[int, float]:
    """(n_heads, alibi_bias_max) of MPT slopes: given, or read back from the tensor."""
    if length > _MAX_ALIBI_POSITION:
        raise ValueError(
            f"attn_impl='flash' applies ALiBi to sequences of at most {_MAX_ALIBI_POSITION} "
            f"tokens; got {length}"
        )
    if bias_max is not None and slopes.dim() == 1:
        return slopes.shape[0], float(bias_max)
    return _per_tensor("alibi", slopes, slope_parameters)


def _expand_kv_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One KV head per query head, for GQA/MQA with a score_mod.

    flash-attn-4 (4.0.0b36, measured on H200) returns wrong gradients, off by ~1e2, when a
    score_mod meets query heads that share a KV head; the forward is right. With the KV heads
    repeated the kernel sees plain multi-head attention and matches the reference; autograd
    sums the repeated heads' gradients back. The price is KV memory traffic, only on the
    ALiBi + GQA path (tests/test_gpu_attention.py covers both cases).
    """
    groups = q.shape[-2] // k.shape[-2]
    if groups == 1:
        return k, v
    return k.repeat_interleave(groups, dim=-2), v.repeat_interleave(groups, dim=-2)


def _fa2(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    alibi_slopes: torch.Tensor | None,
    window: int | None,
    softmax_scale: float | None,
    varlen: tuple[torch.Tensor, int] | None,
) -> torch.Tensor:
    from flash_attn import (  # pyright: ignore[reportMissingImports]
        flash_attn_func,
        flash_attn_varlen_func,
    )

    slopes = None if alibi_slopes is None else alibi_slopes.to(q.device, torch.float32)
    kwargs: dict[str, Any] = {
        "softmax_scale": softmax_scale,
        "causal": causal,
        "window_size": (window, 0 if causal else window) if window is not None else (-1, -1),
        "alibi_slopes": slopes,
    }
    if varlen is None:
        return flash_attn_func(q, k, v, **kwargs)
    cu, max_len = varlen
    return flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, **kwargs)


# 2**23 as float32 bits: OR-ing an int in [0, 2**23) into it gives the float 2**23 + i exactly,
# so an int-to-float conversion costs one integer OR instead of a slow I2F instruction.
_FLOAT_2_POW_23_BITS = 0x4B000000
_MAX_ALIBI_POSITION = 2**23


@functools.cache
def _alibi_score_mods(
    n_heads: int, bias_max: float, causal: bool
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """CuTe score_mod (and its backward) adding MPT's ALiBi bias -slope[h] * |q_idx - kv_idx|.

    The score_mod runs once per score element, beside the softmax's exp2, so its instruction
    count is what ALiBi costs. Positions become floats through the 2**23 bit trick (integer OR,
    no I2F, which shares the special-function pipe with exp2), and with a causal mask the bias
    is applied as +slope * kv_idx: every unmasked kv_idx of a row is <= q_idx, so this differs
    from -slope * (q_idx - kv_idx) by slope * q_idx, a per-row constant that softmax cancels.
    Measured on H200 (fwd+bwd, bf16, the README's three shapes): ALiBi's cost against
    flash-attn-4 without it fell from 11% / 17% / 10% to 6% / 10% / 6%. The slope comes from the
    head index, with MPT's formula.
    """
    import cutlass  # pyright: ignore[reportMissingImports]
    import cutlass.cute as cute  # pyright: ignore[reportMissingImports]

    padded = 2 ** math.ceil(math.log2(n_heads))
    step = bias_max / padded
    interleaved = padded != n_heads
    half = padded // 2

    @cute.jit
    def alibi_score_mod(score, b_idx, h_idx, q_idx, kv_idx, seqlen_info=None, aux_tensors=None):
        h = h_idx.to(cutlass.Float32)
        one = cute.full_like(h, 1.0)
        if cutlass.const_expr(interleaved):
            # heads [0, half) take exponents 2, 4, ...; heads [half, n) take 1, 3, ...
            low = (h + one) * cute.full_like(h, 2.0)
            high = (h - cute.full_like(h, float(half))) * cute.full_like(h, 2.0) + one
            exponent = cute.where(h < cute.full_like(h, float(half)), low, high)
        else:
            exponent = h + one
        slope = cute.math.exp2(exponent * cute.full_like(h, -step))
        bits = cute.full_like(kv_idx, _FLOAT_2_POW_23_BITS)
        kv = (kv_idx | bits).bitcast(cutlass.Float32)  # 2**23 + kv_idx
        if cutlass.const_expr(causal):
            return score + slope * (kv - cute.full_like(kv, float(_MAX_ALIBI_POSITION)))
        q = (q_idx | bits).bitcast(cutlass.Float32)  # 2**23 + q_idx; the difference is exact
        return score - slope * abs(q - kv)

    @cute.jit
    def alibi_score_mod_bwd(
        grad, score, b_idx, h_idx, q_idx, kv_idx, seqlen_info=None, aux_tensors=None
    ):
        return grad  # the bias does not depend on the score

    return alibi_score_mod, alibi_score_mod_bwd
