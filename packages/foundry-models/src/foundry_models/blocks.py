"""The transformer block: pre-norm attention and FFN with residuals.

Module and parameter names follow MPT's (`attn.Wqkv`, `attn.out_proj`, `ffn.up_proj`,
`ffn.down_proj`, `norm_1`, `norm_2`), so MPT checkpoints map onto them one-to-one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from foundry_models.attention import AttnImpl, attention, packed_attention
from foundry_models.attention.flash_packed import options_allow_packing
from foundry_models.config import MPTConfig
from foundry_models.norms import build_norm
from foundry_models.rope import apply_rotary

__all__ = ["AttentionContext", "MPTAttention", "MPTBlock", "MPTGLU", "MPTMLP", "build_ffn"]


@dataclass
class AttentionContext:
    """Per-forward inputs shared by every block (computed once in `MPTModel.forward`)."""

    alibi_slopes: torch.Tensor | None = None
    alibi_bias_max: float | None = None  # what alibi_slopes were built with
    rope_cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    sequence_id: torch.Tensor | None = None
    key_padding_mask: torch.Tensor | None = None  # (B, S) bool, True = real token
    cache: Any = None  # a transformers Cache, or None


def _residual(linear: nn.Linear) -> nn.Linear:
    """`linear`, marked as writing into the residual stream (its init is scaled by depth)."""
    # torch types Module.__setattr__ values as Tensor | Module; a plain flag is stored as is
    linear._is_residual = True  # pyright: ignore[reportArgumentType]
    return linear


class MPTAttention(nn.Module):
    """Multi-head (or grouped-query) self-attention with a fused Wqkv projection."""

    def __init__(self, config: MPTConfig, layer_idx: int) -> None:
        super().__init__()
        opts = config.attn_options
        self.layer_idx = layer_idx
        self.n_heads = config.n_heads
        self.kv_n_heads = opts.kv_n_heads
        self.head_dim = config.head_dim
        self.attn_impl: AttnImpl = opts.attn_impl
        self.softmax_scale = opts.softmax_scale
        self.clip_qkv = opts.clip_qkv
        self.window = opts.sliding_window_size
        self.attn_pdrop = opts.attn_pdrop
        self.packs_qkv = options_allow_packing(opts, config.n_heads)
        bias = not config.no_bias
        kv_dim = self.kv_n_heads * self.head_dim
        self.Wqkv = nn.Linear(config.d_model, config.d_model + 2 * kv_dim, bias=bias)
        self.q_ln: nn.Module | None = None
        self.k_ln: nn.Module | None = None
        if opts.qk_ln:
            self.q_ln = build_norm(config.norm_type, config.d_model, config.norm_eps, bias)
            self.k_ln = build_norm(config.norm_type, kv_dim, config.norm_eps, bias)
        self.out_proj = _residual(nn.Linear(config.d_model, config.d_model, bias=bias))

    def _packable(self, ctx: AttentionContext) -> bool:
        """Whether attention may take the fused projection whole (`packed_attention`)."""
        plain = ctx.sequence_id is None and ctx.key_padding_mask is None and ctx.cache is None
        dropout = self.training and self.attn_pdrop > 0
        return self.packs_qkv and plain and not dropout

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.Wqkv(x)  # (B, T, d + 2*kv_dim)
        if self.clip_qkv is not None:
            qkv = qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
        kv_dim = self.kv_n_heads * self.head_dim
        if self._packable(ctx):
            y = packed_attention(
                qkv,
                self.n_heads,
                self.kv_n_heads,
                self.head_dim,
                impl=self.attn_impl,
                alibi_slopes=ctx.alibi_slopes,
                window=self.window,
                softmax_scale=self.softmax_scale,
                alibi_bias_max=ctx.alibi_bias_max,
            )
            if y is not None:
                return self.out_proj(y.reshape(b, t, d))
        q, k, v = qkv.split([d, kv_dim, kv_dim], dim=-1)
        if self.q_ln is not None and self.k_ln is not None:
            dtype = q.dtype
            q, k = self.q_ln(q).to(dtype), self.k_ln(k).to(dtype)
        q = q.reshape(b, t, self.n_heads, self.head_dim)
        k = k.reshape(b, t, self.kv_n_heads, self.head_dim)
        v = v.reshape(b, t, self.kv_n_heads, self.head_dim)
        if ctx.rope_cos_sin is not None:
            cos, sin = ctx.rope_cos_sin
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if ctx.cache is not None:  # transformers caches hold (B, Hkv, S, D)
            k_all, v_all = ctx.cache.update(k.transpose(1, 2), v.transpose(1, 2), self.layer_idx)
            k, v = k_all.transpose(1, 2), v_all.transpose(1, 2)
        y = attention(
            q,
            k,
            v,
            impl=self.attn_impl,
            causal=True,
            alibi_slopes=ctx.alibi_slopes,
            window=self.window,
            sequence_id=ctx.sequence_id,
            softmax_scale=self.softmax_scale,
            key_padding_mask=ctx.key_padding_mask,
            dropout_p=self.attn_pdrop if self.training else 0.0,
            alibi_bias_max=ctx.alibi_bias_max,
        )  # (B, T, H, D)
        return self.out_proj(y.reshape(b, t, d))


class MPTMLP(nn.Module):
    """GELU MLP: down(gelu(up(x)))."""

    def __init__(self, d_model: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = _residual(nn.Linear(hidden, d_model, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="none"))


class MPTGLU(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = _residual(nn.Linear(hidden, d_model, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def build_ffn(config: MPTConfig) -> nn.Module:
    opts = config.ffn_options
    cls = MPTGLU if opts.ffn_type == "mptglu" else MPTMLP
    return cls(config.d_model, opts.ffn_hidden_size, bias=not config.no_bias)


class MPTBlock(nn.Module):
    """x + attn(norm_1(x)), then + ffn(norm_2(.)); checkpointed when `gradient_checkpointing`."""

    def __init__(self, config: MPTConfig, layer_idx: int) -> None:
        super().__init__()
        bias = not config.no_bias
        self.norm_1 = build_norm(config.norm_type, config.d_model, config.norm_eps, bias)
        self.attn = MPTAttention(config, layer_idx)
        self.norm_2 = build_norm(config.norm_type, config.d_model, config.norm_eps, bias)
        self.ffn = build_ffn(config)
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_ffn_dropout = nn.Dropout(config.resid_pdrop)
        # Set per block, or for all blocks by `model.gradient_checkpointing_enable()`.
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = x + self.resid_attn_dropout(self.attn(self.norm_1(x), ctx))
        return x + self.resid_ffn_dropout(self.ffn(self.norm_2(x)))
