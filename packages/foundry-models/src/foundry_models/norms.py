"""Normalisation layers: LayerNorm, low-precision LayerNorm and RMSNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LowPrecisionLayerNorm", "RMSNorm", "build_norm"]


class LowPrecisionLayerNorm(nn.LayerNorm):
    """LayerNorm computed in the autocast dtype (bf16/fp16) instead of fp32.

    Outside autocast it is an ordinary LayerNorm, so weights and fp32 outputs match
    `torch.nn.LayerNorm` (and transformers' MPT) exactly.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input
        device_type = x.device.type
        if not torch.is_autocast_enabled(device_type):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(device_type)
        weight, bias = _to_dtype(self.weight, dtype), _to_dtype(self.bias, dtype)
        with torch.autocast(device_type=device_type, enabled=False):
            return F.layer_norm(x.to(dtype), self.normalized_shape, weight, bias, self.eps)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale, computed in fp32 (Llama's arithmetic)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _to_dtype(param: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """`param` in `dtype`; a LayerNorm without elementwise affine (or bias) holds None."""
    return None if param is None else param.to(dtype)


def build_norm(norm_type: str, dim: int, eps: float, bias: bool) -> nn.Module:
    """The norm named by `MPTConfig.norm_type` (RMSNorm never has a bias)."""
    if norm_type == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if norm_type == "low_precision_layernorm":
        return LowPrecisionLayerNorm(dim, eps=eps, bias=bias)
    if norm_type == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm_type {norm_type!r}")  # MPTConfig validates this first
