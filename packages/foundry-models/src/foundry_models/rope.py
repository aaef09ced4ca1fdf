"""Rotary position embeddings (half-rotation layout, as in transformers' Llama).

Frequencies are computed on the fly from the config (no buffers), so a model built on the meta
device needs no buffer re-initialisation and `max_seq_len` can change after loading.
Scaling types: "linear" (position interpolation), "dynamic" (NTK-aware base growth once the
sequence passes `original_max_seq_len`) and "llama3" (per-frequency smooth interpolation).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["apply_rotary", "rope_cos_sin", "rope_inv_freq"]


def rope_inv_freq(
    head_dim: int,
    theta: float,
    scaling: dict[str, Any] | None,
    seq_len: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Inverse frequencies (head_dim // 2,) in fp32 for sequences up to `seq_len` positions."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    spec: dict[str, Any] = {} if scaling is None else scaling
    kind = None if scaling is None else spec["type"]
    if kind == "dynamic":
        original = spec["original_max_seq_len"]
        factor = spec["factor"]
        length = max(seq_len, original)
        theta = theta * ((factor * length / original) - (factor - 1)) ** (head_dim / (head_dim - 2))
    inv_freq = 1.0 / (theta**exponents)
    if kind == "linear":
        inv_freq = inv_freq / spec["factor"]
    elif kind == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, spec)
    return inv_freq


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_seq_len"]
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths are interpolated by `factor`, short ones kept, the band between blended
    scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    is_mid = ~(wavelen < context / high) * ~(wavelen > context / low)
    return torch.where(is_mid, blended, scaled)


def rope_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (B, T, head_dim) for integer `positions` (B, T), cast to `dtype`."""
    freqs = positions[..., None].float() * inv_freq.to(positions.device)  # (B, T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (B, T, H, D) by position: x*cos + rotate_half(x)*sin."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (B, T, 1, D)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)  # fp32 tables under autocast: keep x's dtype
