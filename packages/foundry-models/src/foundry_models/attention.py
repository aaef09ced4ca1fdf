"""Attention dispatcher: one call for the `torch`, `flash` and `triton` implementations.

Shapes: q (B, T, H, D), k and v (B, S, Hkv, D) with H a multiple of Hkv (GQA/MQA); the output is
(B, T, H, D). When T < S (decoding with a KV cache) the queries are the last T positions, so
causal masking is aligned bottom-right, as in FlashAttention.

Mask semantics shared by every implementation:
- causal: query at absolute position i sees keys j <= i.
- window (sliding window of `window` past tokens): query i sees keys j with i - j <= window.
- sequence_id (B, T) int: packed sequences; a query sees only keys with its own sequence id.
- alibi_slopes (H,) or (B, H) fp32: adds -slope * |i - j| to the scaled score.
- softmax_scale: defaults to 1/sqrt(D).

`torch` (SDPA) is the reference and runs anywhere; it also accepts a key padding mask and
attention dropout, which the fused kernels do not take.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, cast

import torch
import torch.nn.functional as F

from foundry_models.errors import AttentionUnavailableError

__all__ = ["AttnImpl", "alibi_slopes", "attention", "torch_attention"]

AttnImpl = Literal["torch", "flash", "triton"]


def alibi_slopes(
    n_heads: int, alibi_bias_max: float = 8.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Per-head ALiBi slopes (n_heads,) in fp32, MPT's formula.

    For a power-of-two head count the slopes are 2^(-alibi_bias_max * h / n_heads), h = 1..n;
    otherwise the slopes of the next power of two are interleaved (odd ones first) and cut to
    n_heads, exactly as transformers' MPT builds them.
    """
    padded = 2 ** math.ceil(math.log2(n_heads))
    exponents = torch.arange(1, padded + 1, dtype=torch.int64, device=device).float()
    slopes = 1.0 / torch.pow(2, exponents * (alibi_bias_max / padded))
    if padded != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    impl: AttnImpl = "torch",
    causal: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    window: int | None = None,
    sequence_id: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention through the implementation named by `impl`.

    `key_padding_mask` (B, S) bool (True = real token) and `dropout_p` are accepted by `torch`
    only; the model sends padded or cached batches there itself.
    """
    _check_shapes(q, k, v, sequence_id)
    if impl == "torch":
        return torch_attention(
            q,
            k,
            v,
            causal=causal,
            alibi_slopes=alibi_slopes,
            window=window,
            sequence_id=sequence_id,
            softmax_scale=softmax_scale,
            key_padding_mask=key_padding_mask,
            dropout_p=dropout_p,
        )
    if key_padding_mask is not None or dropout_p > 0:
        raise ValueError(
            f"attn_impl={impl!r} takes no key_padding_mask or dropout; use impl='torch' for those"
        )
    if impl == "flash":
        from foundry_models.flash_attention import flash_attention

        return flash_attention(
            q,
            k,
            v,
            causal=causal,
            alibi_slopes=alibi_slopes,
            window=window,
            sequence_id=sequence_id,
            softmax_scale=softmax_scale,
        )
    if impl == "triton":
        kernel = _load_triton_kernel()
        return kernel(
            q,
            k,
            v,
            causal=causal,
            alibi_slopes=alibi_slopes,
            # the kernel's window counts the query itself (i - j < w); ours does not
            window=None if window is None else window + 1,
            sequence_id=sequence_id,
            softmax_scale=softmax_scale,
        )
    raise ValueError(f"unknown attention implementation {impl!r}; use 'torch', 'flash' or 'triton'")


def _load_triton_kernel() -> Callable[..., torch.Tensor]:
    try:
        from foundry_models.triton_attention import triton_attention
    except ImportError as exc:  # triton missing, or the kernel module not present
        raise AttentionUnavailableError(
            f"attn_impl='triton' is unavailable here ({exc}). It needs the `triton` package "
            "(installed with torch on Linux) and a CUDA GPU; use attn_impl='torch' elsewhere."
        ) from exc
    return triton_attention


def _check_shapes(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sequence_id: torch.Tensor | None
) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(
            f"attention expects q (B, T, H, D) and k, v (B, S, Hkv, D); got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
        raise ValueError(
            f"incompatible q {tuple(q.shape)} and k {tuple(k.shape)}: batch and head dim must "
            "match and H must be a multiple of Hkv"
        )
    if q.shape[1] > k.shape[1]:
        raise ValueError(f"more queries ({q.shape[1]}) than keys ({k.shape[1]})")
    if sequence_id is not None and (sequence_id.shape != q.shape[:2] or q.shape[1] != k.shape[1]):
        raise ValueError(
            f"sequence_id must be (B, T) = {tuple(q.shape[:2])} with T == S (no KV cache); got "
            f"{tuple(sequence_id.shape)} with S = {k.shape[1]}"
        )


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
