"""flash-attn-4 as torch custom ops, so `torch.compile` traces through attention.

flash-attn-4's Python entry (`flash_attn.cute.flash_attn_func`, an autograd Function over CuTe
kernels launched through DLPack wrappers) cannot be traced by dynamo: under `compile: model` every
attention call is a graph break, splitting a 24-layer model into 25 forward and 25 backward graphs.
Here the kernels' own forward and backward entry points (`_flash_attn_fwd`, `_flash_attn_bwd` of
`flash_attn.cute.interface`) become two opaque custom ops with fake (shape-only) implementations
and an autograd formula, which dynamo records as single nodes.

Only the plain path goes through these ops: fixed-length sequences, with or without a sliding
window and ALiBi (as the score_mod of flash.py, rebuilt inside the op from its two numbers).
Packed sequences (varlen) keep flash-attn-4's own entry.

Off unless `FOUNDRY_FA4_CUSTOM_OP=1` is set: as of 2026-12-05 these ops have not run on a GPU
(the CPU tests check their registration and fake shapes only). `tests/test_gpu_attention.py`
compares them with the reference on a GPU.
"""

from __future__ import annotations

import os

import torch

__all__ = ["custom_op_enabled", "fa4_attention"]


def custom_op_enabled() -> bool:
    """Whether flash.py routes plain flash-attn-4 calls through these ops."""
    return os.environ.get("FOUNDRY_FA4_CUSTOM_OP", "0") == "1"


def _score_mods(alibi_heads: int, alibi_bias_max: float, causal: bool) -> tuple[object, object]:
    if alibi_heads == 0:
        return None, None
    from foundry_models.attention.flash import _alibi_score_mods

    return _alibi_score_mods(alibi_heads, alibi_bias_max, causal)


@torch.library.custom_op("foundry::fa4_forward", mutates_args=(), device_types="cuda")
def fa4_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: float,
    causal: bool,
    window_left: int | None,
    window_right: int | None,
    alibi_heads: int,
    alibi_bias_max: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output (B, T, H, Dv) and its log-sum-exp (B, H, T) float32."""
    from flash_attn.cute.interface import (  # pyright: ignore[reportMissingImports]
        _flash_attn_fwd,
    )

    score_mod, _ = _score_mods(alibi_heads, alibi_bias_max, causal)
    out, lse, *_ = _flash_attn_fwd(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        softmax_scale=softmax_scale,
        causal=causal,
        window_size_left=window_left,
        window_size_right=window_right,
        score_mod=score_mod,
        return_lse=True,
    )
    return out, lse


@fa4_forward.register_fake
def _fa4_forward_fake(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *_: object
) -> tuple[torch.Tensor, torch.Tensor]:
    b, t, h, _d = q.shape
    out = q.new_empty((b, t, h, v.shape[-1]))
    return out, q.new_empty((b, h, t), dtype=torch.float32)


@torch.library.custom_op("foundry::fa4_backward", mutates_args=(), device_types="cuda")
def fa4_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    softmax_scale: float,
    causal: bool,
    window_left: int | None,
    window_right: int | None,
    alibi_heads: int,
    alibi_bias_max: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of q, k and v."""
    from flash_attn.cute.interface import (  # pyright: ignore[reportMissingImports]
        _flash_attn_bwd,
    )

    score_mod, score_mod_bwd = _score_mods(alibi_heads, alibi_bias_max, causal)
    grads = _flash_attn_bwd(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        out,
        dout.contiguous(),
        lse,
        softmax_scale,
        causal,
        0.0,
        window_size_left=window_left,
        window_size_right=window_right,
        score_mod=score_mod,
        score_mod_bwd=score_mod_bwd,
    )
    return grads[0], grads[1], grads[2]


@fa4_backward.register_fake
def _fa4_backward_fake(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *_: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: tuple) -> None:
    q, k, v, *options = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1])
    ctx.options = options  # pyright: ignore[reportAttributeAccessIssue]


def _backward(
    ctx: torch.autograd.function.FunctionCtx, dout: torch.Tensor, _dlse: torch.Tensor | None
) -> tuple[torch.Tensor | None, ...]:
    q, k, v, out, lse = ctx.saved_tensors  # pyright: ignore[reportAttributeAccessIssue]
    options = ctx.options  # pyright: ignore[reportAttributeAccessIssue]
    dq, dk, dv = fa4_backward(dout, q, k, v, out, lse, *options)
    return (dq, dk, dv, *([None] * len(options)))


fa4_forward.register_autograd(_backward, setup_context=_setup_context)


def fa4_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    window: int | None,
    softmax_scale: float | None,
    alibi: tuple[int, float] | None,
) -> torch.Tensor:
    """flash-attn-4 on q (B, T, H, D), k/v (B, S, Hkv, D) through the custom ops; (B, T, H, Dv)."""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    left, right = (window, 0 if causal else window) if window is not None else (None, None)
    heads, bias_max = alibi if alibi is not None else (0, 0.0)
    out, _lse = fa4_forward(q, k, v, float(scale), causal, left, right, heads, float(bias_max))
    return out
