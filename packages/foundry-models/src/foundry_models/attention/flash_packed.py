"""flash-attn-4 on a fused q/k/v projection's output, with one gradient buffer for all three.

MPT's attention projects q, k and v with one matrix (`Wqkv`) and splits the result. Through
`flash_attn_func`, autograd then gets three separate gradients and concatenates them (the split's
backward) before the projection's backward can use them: one copy of 3 x (B, T, d) bf16 a layer and
micro-batch. In the profile of the shipped mpt-350m.yaml on one H100 that concatenation was
`triton_poi_fused_cat_view_0`, 25 ms of a 1,485 ms batch (benchmarks/DATASHEET.md, "Where a batch
goes").

Here the autograd Function takes the projection's output itself: the kernels read q, k and v as
strided views of it (as they do through `flash_attn_func`), and the backward hands flash-attn-4's
`_flash_attn_bwd` views of one (B, T, d + 2 * kv) buffer as its `dq`, `dk` and `dv` outputs, so the
gradient arrives already packed. The kernels and their settings are those `flash_attn_func` runs.

On by default; `FOUNDRY_FLASH_PACKED_QKV=0` splits q, k and v as before. Measured through
`foundry-train` on the shipped YAMLs on one H100 (benchmarks/DATASHEET.md, "Two changes of
2026-12-06"): 1.010x the split path's tokens/s at 125M, 1.018x at 350M, 1.009x at 1B, with the same
loss; tests/test_gpu_attention.py compares its gradient with the split path's.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = [
    "PACKED_VARIABLE",
    "options_allow_packing",
    "packed_enabled",
    "packed_flash_attention",
    "packed_for",
]

PACKED_VARIABLE = "FOUNDRY_FLASH_PACKED_QKV"
_OFF = ("0", "false", "no", "off")


def packed_enabled() -> bool:
    """Whether MPT attention hands flash-attn-4 the packed projection (on unless set to 0)."""
    return os.environ.get(PACKED_VARIABLE, "1").strip().lower() not in _OFF


def options_allow_packing(attn: Any, n_heads: int) -> bool:
    """Whether a model's shape of attention (`AttentionOptions`) lets the projection go whole:
    RoPE and qk-LN change q and k between the projection and the kernel, and flash.py repeats
    grouped KV heads for ALiBi. MPTAttention reads this once; per-call state (packed sequences,
    padding, a KV cache, dropout in training) it checks on each call."""
    grouped_alibi = attn.alibi and attn.kv_n_heads not in (None, n_heads)
    return not (attn.qk_ln or attn.rope or grouped_alibi)


def packed_for(attn: Any, n_heads: int) -> bool:
    """Whether a model with these `attn_config` options takes the packed path in training, where
    flash-attn-4 runs (the start-up line's words)."""
    from foundry_models.attention.flash_op import custom_op_enabled

    if not packed_enabled() or custom_op_enabled():
        return False
    per_call = attn.attn_uses_sequence_id or attn.attn_pdrop > 0
    return options_allow_packing(attn, n_heads) and not per_call


def _views(
    packed: torch.Tensor, heads: int, kv_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, t, _ = packed.shape
    d, kv = heads * head_dim, kv_heads * head_dim
    q, k, v = packed.split([d, kv, kv], dim=-1)
    return (
        q.view(b, t, heads, head_dim),
        k.view(b, t, kv_heads, head_dim),
        v.view(b, t, kv_heads, head_dim),
    )


class _PackedQKVAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        qkv: torch.Tensor,
        heads: int,
        kv_heads: int,
        head_dim: int,
        kwargs: dict[str, Any],
    ) -> torch.Tensor:
        from flash_attn.cute.interface import (  # pyright: ignore[reportMissingImports]
            _flash_attn_fwd,
        )

        q, k, v = _views(qkv, heads, kv_heads, head_dim)
        out, lse, *_ = _flash_attn_fwd(
            q,
            k,
            v,
            softmax_scale=kwargs["softmax_scale"],
            causal=kwargs["causal"],
            window_size_left=kwargs["window_left"],
            window_size_right=kwargs["window_right"],
            score_mod=kwargs["score_mod"],
            return_lse=True,
        )
        ctx.save_for_backward(qkv, out, lse)
        ctx.shape = (heads, kv_heads, head_dim)
        ctx.kwargs = kwargs
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from flash_attn.cute.interface import (  # pyright: ignore[reportMissingImports]
            _flash_attn_bwd,
        )

        qkv, out, lse = ctx.saved_tensors
        kwargs = ctx.kwargs
        dqkv = torch.empty_like(qkv)
        q, k, v = _views(qkv, *ctx.shape)
        dq, dk, dv = _views(dqkv, *ctx.shape)
        _flash_attn_bwd(
            q,
            k,
            v,
            out,
            dout.contiguous(),
            lse,
            kwargs["softmax_scale"],
            kwargs["causal"],
            0.0,
            window_size_left=kwargs["window_left"],
            window_size_right=kwargs["window_right"],
            score_mod=kwargs["score_mod"],
            score_mod_bwd=kwargs["score_mod_bwd"],
            dq=dq,
            dk=dk,
            dv=dv,
        )
        return dqkv, None, None, None, None


def packed_flash_attention(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    head_dim: int,
    *,
    causal: bool,
    window: int | None,
    softmax_scale: float | None,
    alibi: tuple[int, float] | None,
) -> torch.Tensor:
    """flash-attn-4 on qkv (B, T, (H + 2 * Hkv) * D): the output (B, T, H, D).

    `alibi` is (heads, alibi_bias_max) for flash.py's score_mod; the caller keeps ALiBi with
    grouped KV heads off this path (flash.py repeats the KV heads there, see `_expand_kv_heads`).
    """
    from foundry_models.attention.flash import _alibi_score_mods

    score_mod, score_mod_bwd = _alibi_score_mods(*alibi, causal) if alibi else (None, None)
    left, right = (window, 0 if causal else window) if window is not None else (None, None)
    kwargs = {
        "softmax_scale": softmax_scale,
        "causal": causal,
        "window_left": left,
        "window_right": right,
        "score_mod": score_mod,
        "score_mod_bwd": score_mod_bwd,
    }
    return _PackedQKVAttention.apply(qkv, heads, kv_heads, head_dim, kwargs)  # type: ignore[no-any-return]
