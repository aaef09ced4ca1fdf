"""The `torch` implementation: the reference every fast path is tested against.

PyTorch's `scaled_dot_product_attention` with an explicit additive bias (ALiBi) and mask
(causal, sliding window, packed sequences, key padding); it runs anywhere, CPU included, and is
the only implementation that takes a key padding mask, attention dropout or a KV cache (T < S).
Mask semantics are those of `foundry_models.attention.dispatch`.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

__all__ = ["attention_bias", "torch_attention"]


def torch_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    window: int | None = None,
    sequence_id: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Reference attention on `scaled_dot_product_attention` with an explicit mask/bias."""
    n_heads, n_kv = q.shape[2], k.shape[2]
    if n_kv != n_heads:  # GQA: query head h reads key/value head h // (H / Hkv)
        k = k.repeat_interleave(n_heads // n_kv, dim=2)
        v = v.repeat_interleave(n_heads // n_kv, dim=2)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, *, D)
    t, s = q.shape[1], k.shape[1]
    plain = alibi_slopes is None and window is None and sequence_id is None
    if plain and key_padding_mask is None and (not causal or t == s):
        out = F.scaled_dot_product_attention(
            qt, kt, vt, is_causal=causal and t > 1, dropout_p=dropout_p, scale=softmax_scale
        )
        return out.transpose(1, 2)
    bias = attention_bias(
        t,
        s,
        dtype=q.dtype,
        device=q.device,
        causal=causal,
        alibi_slopes=alibi_slopes,
        window=window,
        sequence_id=sequence_id,
        key_padding_mask=key_padding_mask,
    )
    out = F.scaled_dot_product_attention(
        qt, kt, vt, attn_mask=bias, dropout_p=dropout_p, scale=softmax_scale
    )
    return out.transpose(1, 2)


def attention_bias(
    t: int,
    s: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    causal: bool,
    alibi_slopes: torch.Tensor | None,
    window: int | None,
    sequence_id: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Additive bias (B|1, H|1, T, S): ALiBi plus the dtype's lowest value where masked.

    The lowest finite value (not -inf) keeps fully masked rows (padding) free of NaN.
    """
    q_pos = torch.arange(s - t, s, device=device)
    k_pos = torch.arange(s, device=device)
    dist = q_pos[:, None] - k_pos[None, :]  # (T, S): i - j
    allowed = torch.ones(t, s, dtype=torch.bool, device=device)
    if causal:
        allowed &= dist >= 0
    if window is not None:
        allowed &= dist.abs() <= window
    allowed = allowed[None, None]  # (1, 1, T, S)
    if sequence_id is not None:
        allowed = allowed & (sequence_id[:, None, :, None] == sequence_id[:, None, None, :])
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool()[:, None, None, :]
    bias = torch.zeros((), dtype=torch.float32, device=device)
    if alibi_slopes is not None:
        slopes = alibi_slopes.float().to(device)
        slopes = slopes[None, :, None, None] if slopes.dim() == 1 else slopes[:, :, None, None]
        bias = -slopes * dist.abs().float()  # (1|B, H, T, S)
    bias = bias.to(dtype).expand(*_broadcast_shape(bias, allowed))
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


def _broadcast_shape(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...]:
    # torch leaves the parameters and return type of broadcast_shapes unannotated
    shape = cast(torch.Size, torch.broadcast_shapes(a.shape, b.shape))  # pyright: ignore[reportUnknownMemberType]
    return tuple(shape)
