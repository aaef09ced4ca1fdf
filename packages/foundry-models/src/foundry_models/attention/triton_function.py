"""The Triton attention as a differentiable function: input checks, the autograd wrapper, the entry point.

The kernels are split by role: triton_common.py (the scheme, masks and shared device helpers),
triton_forward.py, triton_backward_dq.py, triton_backward_dkdv.py, and triton_launch.py (tiles,
autotuning, and the host code that launches them).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from foundry_models.attention.triton_launch import (
    Problem,
    interpreted,
    run_backward,
    run_forward,
)

__all__ = ["triton_attention"]

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_HEAD_DIM = 256


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class _TritonAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        slopes: torch.Tensor | None,
        seq_ids: torch.Tensor | None,
        causal: bool,
        window: int | None,
        softmax_scale: float,
    ) -> torch.Tensor:
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        problem = Problem(q, k, slopes, seq_ids, causal, window, softmax_scale)
        with _on_device(q):
            out, lse = run_forward(problem, q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.problem = problem
        return out

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        grad_out = _last_dim_contiguous(grad_outputs[0])
        with _on_device(q):
            dq, dk, dv = run_backward(ctx.problem, q, k, v, out, lse, grad_out)
        return dq, dk, dv, None, None, None, None, None


def _on_device(t: torch.Tensor) -> Any:
    return torch.cuda.device(t.device) if t.is_cuda else _NullContext()


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    alibi_slopes: torch.Tensor | None,
    window: int | None,
    sequence_id: torch.Tensor | None,
) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "triton_attention expects q of shape (B, T, H, D) and k, v of shape (B, S, Hkv, D); "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}."
        )
    batch, seq_len, heads, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(
            "triton_attention needs k and v of shape (B, S, Hkv, D) matching q's batch and head "
            f"dim; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}."
        )
    if k.shape[1] != seq_len:
        raise ValueError(
            f"triton_attention computes training/prefill attention with T == S; got T={seq_len} "
            f"queries and S={k.shape[1]} keys. Use the `torch` implementation for decoding with a "
            "KV cache."
        )
    if heads % k.shape[2] != 0:
        raise ValueError(
            f"the number of query heads ({heads}) must be a multiple of the number of key/value "
            f"heads ({k.shape[2]}) for grouped-query attention."
        )
    if q.dtype not in _SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(
            "triton_attention supports float16, bfloat16 and float32 with q, k and v of one dtype; "
            f"got {q.dtype}, {k.dtype}, {v.dtype}."
        )
    if head_dim > _MAX_HEAD_DIM:
        raise ValueError(
            f"triton_attention supports head dims up to {_MAX_HEAD_DIM}; got {head_dim}."
        )
    if not (q.device == k.device == v.device):
        raise ValueError("q, k and v must be on the same device.")
    _check_options(q, causal, alibi_slopes, window, sequence_id)


def _check_options(
    q: torch.Tensor,
    causal: bool,
    alibi_slopes: torch.Tensor | None,
    window: int | None,
    sequence_id: torch.Tensor | None,
) -> None:
    batch, seq_len, heads = q.shape[:3]
    if alibi_slopes is not None and tuple(alibi_slopes.shape) != (heads,):
        raise ValueError(
            f"alibi_slopes must have shape (H,) = ({heads},); got {tuple(alibi_slopes.shape)}."
        )
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"window must be a non-negative int (or None); got {window!r}.")
        if not causal:
            raise ValueError("a sliding window is supported with causal attention only.")
    if sequence_id is not None and (
        tuple(sequence_id.shape) != (batch, seq_len)
        or sequence_id.dtype.is_floating_point
        or sequence_id.dtype == torch.bool
    ):
        raise ValueError(
            f"sequence_id must be an integer tensor of shape (B, T) = ({batch}, {seq_len}); got "
            f"{sequence_id.dtype} {tuple(sequence_id.shape)}."
        )
    if not q.is_cuda and not interpreted():
        raise RuntimeError(
            f"triton_attention runs on CUDA tensors (got {q.device}); on CPU use attn_impl='torch', "
            "or set TRITON_INTERPRET=1 before triton is imported to run the kernels in Triton's "
            "interpreter (slow, for tests)."
        )


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    window: int | None = None,
    sequence_id: torch.Tensor | None = None,
    softmax_scale: float | None = None,
) -> torch.Tensor:
    """Attention of q (B, T, H, D) over k, v (B, T, Hkv, D), differentiable in q, k and v.

    Args:
        q: queries, float16 / bfloat16 (float32 accepted), head dimension contiguous.
        k: keys with ``H % Hkv == 0`` (Hkv == 1 is multi-query attention).
        v: values, same shape as ``k``.
        causal: key ``j`` visible to query ``i`` only if ``j <= i``.
        alibi_slopes: (H,) slopes; adds ``slope[h] * (j - i)`` to the scores (``-slope*|i - j|``
            when not causal). Not differentiated.
        window: sliding window (causal only): key ``j`` visible to query ``i`` only if
            ``i - j <= window`` (``window`` past tokens besides itself).
        sequence_id: (B, T) integer ids of packed sequences; a query sees keys of its own id only.
        softmax_scale: score scale, ``1 / sqrt(D)`` by default.

    Returns:
        The attention output, (B, T, H, D), in q's dtype.
    """
    if q.is_cuda and torch.is_autocast_enabled("cuda"):
        # Like SDPA under autocast: run in the autocast dtype (q may come out of an fp32 qk-norm).
        amp_dtype = torch.get_autocast_dtype("cuda")
        q, k, v = (t.to(amp_dtype) for t in (q, k, v))
    _check_inputs(q, k, v, causal, alibi_slopes, window, sequence_id)
    seq_len, head_dim = q.shape[1], q.shape[3]
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.detach().to(device=q.device, dtype=torch.float32).contiguous()
    seq_ids = None
    if sequence_id is not None:
        seq_ids = sequence_id.to(device=q.device, dtype=torch.int32).contiguous()
    if window is not None and window >= seq_len:
        window = None  # the window covers every causal key: plain causal attention
    out = _TritonAttentionFunction.apply(q, k, v, slopes, seq_ids, causal, window, scale)
    return out
