"""ALiBi slopes, MPT's formula: the one place it is written in Python.

The flash score_mod (flash.py) and the Triton kernels read the slopes this module computes (the
score_mod recomputes them from the head index in the kernel and is checked against these).
"""

from __future__ import annotations

import math

import torch

__all__ = ["alibi_slopes", "slope_parameters"]


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


def slope_parameters(slopes: torch.Tensor) -> tuple[int, float]:
    """Recover (n_heads, alibi_bias_max) from MPT slopes; other slope sets are a ValueError."""
    if slopes.dim() != 1:
        raise ValueError("ALiBi slopes computed in a kernel must be per head, of shape (H,)")
    n_heads = slopes.shape[0]
    padded = 2 ** math.ceil(math.log2(n_heads))
    smallest_exponent = 2 if padded != n_heads else 1  # first slope: exponent index 2 or 1
    bias_max = -math.log2(float(slopes[0])) * padded / smallest_exponent
    expected = alibi_slopes(n_heads, bias_max, device=slopes.device)
    if not torch.allclose(slopes.float(), expected, rtol=1e-5, atol=0):
        raise ValueError(
            "attn_impl='flash' computes ALiBi slopes in the kernel with MPT's formula; the "
            "given slopes do not follow it (use foundry_models.attention.alibi_slopes)"
        )
    return n_heads, bias_max
