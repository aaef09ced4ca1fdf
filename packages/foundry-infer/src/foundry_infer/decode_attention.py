"""The static engine's decode attention: torch's SDPA (the default) or one Triton kernel.

A decode step's attention over the slot cache is, with SDPA, two kernels a layer: an
``index_put_`` that writes the new keys and values into the cache, then SDPA over the cache with
an additive mask (causal, plus ALiBi for MPT). ``FOUNDRY_DECODE_ATTENTION=triton`` does both in
one kernel (:mod:`foundry_infer.decode_attention_kernel`): it reads only each sequence's cached
positions before its own, and computes ALiBi from the slopes, so no mask is read. It is a lever
for measuring, off by default until a GPU has shown it faster; it needs Triton and a CUDA device
(or ``TRITON_INTERPRET=1``, Triton's CPU interpreter, which the tests use). A value it does not
know, or ``triton`` where it cannot run, is refused when the engine starts.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .errors import FoundryError

__all__ = ["ATTENTION_VARIABLE", "decode_attention", "triton_decode_wanted"]

ATTENTION_VARIABLE = "FOUNDRY_DECODE_ATTENTION"
_CHOICES = ("sdpa", "triton")


def triton_decode_wanted(device_type: str) -> bool:
    """Whether :data:`ATTENTION_VARIABLE` asks for the Triton kernel, checked against this
    machine (raises :class:`FoundryError` for a value it does not know or cannot run here)."""
    value = os.environ.get(ATTENTION_VARIABLE, "sdpa").strip().lower() or "sdpa"
    if value not in _CHOICES:
        raise FoundryError(
            f"{ATTENTION_VARIABLE}={os.environ[ATTENTION_VARIABLE]!r} is not a decode attention; "
            f"use one of {', '.join(_CHOICES)} (sdpa is the default), or unset it."
        )
    if value == "sdpa":
        return False
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if device_type != "cuda" and not interpreted:
        raise FoundryError(
            f"{ATTENTION_VARIABLE}=triton needs a CUDA device, and this engine runs on "
            f"{device_type}. Unset {ATTENTION_VARIABLE} (SDPA runs everywhere), or run with "
            "--device cuda."
        )
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        raise FoundryError(
            f"{ATTENTION_VARIABLE}=triton needs the triton package, which does not import here "
            f"({exc}). Install it (it comes with torch's Linux CUDA wheels) or unset "
            f"{ATTENTION_VARIABLE}."
        ) from exc
    return True


def decode_attention(
    q: torch.Tensor,  # (B, H, 1, D)
    new_kv: torch.Tensor,  # (B, 1, 2, Hkv, D)
    positions: torch.Tensor,  # (B, 1) int64
    cache: torch.Tensor,  # (2, B, Hkv, L, D)
    scale: float,
    slopes: torch.Tensor | None = None,  # (1, H, 1, 1) float32 ALiBi slopes
) -> torch.Tensor:
    """Write the new keys and values at ``positions`` and attend, in one kernel; (B, 1, H * D)."""
    from .decode_attention_kernel import decode_attention_kernel

    b, h, t, d = q.shape
    kv_heads = cache.shape[2]
    if t != 1 or d & (d - 1) or d > 256:
        raise ValueError(f"decode attention takes one token of a power-of-two head size: {q.shape}")
    for name, x in (("q", q), ("new_kv", new_kv), ("cache", cache)):
        if x.stride(-1) != 1:
            raise ValueError(f"decode attention needs {name}'s head dimension contiguous")
    group = h // kv_heads
    group_p2 = 1 << (group - 1).bit_length()
    out = torch.empty((b, h, d), dtype=q.dtype, device=q.device)
    # without ALiBi the kernel never reads its slopes pointer; any tensor fills the argument
    flat_slopes: Any = out if slopes is None else slopes.reshape(h).contiguous()
    decode_attention_kernel[(b, kv_heads)](
        q,
        new_kv,
        positions,
        cache,
        flat_slopes,
        out,
        q.stride(0),
        q.stride(1),
        new_kv.stride(0),
        new_kv.stride(2),
        new_kv.stride(3),
        positions.stride(0),
        cache.stride(0),
        cache.stride(1),
        cache.stride(2),
        cache.stride(3),
        out.stride(0),
        out.stride(1),
        float(scale),
        GROUP=group,
        GROUP_P2=group_p2,
        HEAD_DIM=d,
        BLOCK_N=max(16, 128 // group_p2),  # (group, block, head_dim) products of 16K at most
        ALIBI=slopes is not None,
        num_warps=8,
    )
    return out.reshape(b, 1, h * d)
