"""Attention dispatcher: which implementation runs (`choose_impl`), and one call for all of them.

Shapes: q (B, T, H, D), k and v (B, S, Hkv, D) with H a multiple of Hkv (GQA/MQA); the output is
(B, T, H, D). When T < S (decoding with a KV cache) the queries are the last T positions, so
causal masking is aligned bottom-right, as in FlashAttention.

Mask semantics shared by every implementation:
- causal: query at absolute position i sees keys j <= i.
- window (sliding window of `window` past tokens): query i sees keys j with i - j <= window,
  i.e. `window` earlier tokens besides itself (flash-attn's `window_size=(window, 0)`).
- sequence_id (B, T) int: packed sequences; a query sees only keys with its own sequence id.
- alibi_slopes (H,) or (B, H) fp32: adds -slope * |i - j| to the scaled score.
- softmax_scale: defaults to 1/sqrt(D).

Implementations (`attn_impl`): `torch` (SDPA, the reference; runs anywhere), `flash`
(FlashAttention-4 or flash-attn 2), `triton` (this project's kernel), and `auto`, which picks
flash where it imports and the GPU supports it, else triton on CUDA, else torch.

The one place a call is sent to `torch` whatever was asked: a key padding mask, attention
dropout or a KV cache (T < S), which only the reference takes (`_call_impl`). An explicit
implementation that cannot run here is an error (`check_impl_available`), never replaced.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from foundry_models.attention.flash import INSTALL_HINT, flash_attention, flash_status
from foundry_models.attention.reference import torch_attention
from foundry_models.errors import AttentionUnavailableError

__all__ = [
    "ATTN_IMPLS",
    "AttnImpl",
    "ConcreteImpl",
    "ImplChoice",
    "attention",
    "check_impl_available",
    "choose_impl",
]

AttnImpl = Literal["auto", "torch", "flash", "triton"]
ConcreteImpl = Literal["torch", "flash", "triton"]
ATTN_IMPLS: tuple[AttnImpl, ...] = get_args(AttnImpl)


@dataclass(frozen=True)
class ImplChoice:
    """The implementation that runs and why, e.g. `flash (flash-attn-4, sm90)`; for flash on CUDA,
    which FlashAttention (`backend`: 'fa4' or 'fa2', as `flash_status` finds it)."""

    impl: ConcreteImpl
    reason: str
    backend: str | None = None

    def __str__(self) -> str:
        return f"{self.impl} ({self.reason})"


def _as_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _unknown_impl(impl: object) -> str:
    close = difflib.get_close_matches(str(impl), list(ATTN_IMPLS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"attn_impl must be one of {', '.join(map(repr, ATTN_IMPLS))}, got {impl!r}{hint}"


def check_impl_available(impl: str, device: torch.device | str | None = None) -> list[str]:
    """Why `impl` cannot run on `device` (default: this machine's GPU, else CPU); [] if it can.

    For `foundry-train validate`'s hardware checks: `auto` and `torch` always run; `flash` needs
    a CUDA GPU it supports and flash-attn-4 or flash-attn 2; `triton` needs the `triton` package
    and a CUDA GPU (or `TRITON_INTERPRET=1`, Triton's slow CPU interpreter, for tests).
    """
    if impl not in ATTN_IMPLS:
        return [_unknown_impl(impl)]
    dev = _as_device(device)
    if impl == "flash":
        if dev.type != "cuda":
            return [
                f"attn_impl 'flash' runs on CUDA GPUs and this run is on {dev.type} "
                f"({'no CUDA GPU is visible' if not torch.cuda.is_available() else 'CPU tensors'}); "
                "set attn_impl to 'auto' (picks what runs here) or 'torch'"
            ]
        backend, why = flash_status(dev.index or 0)
        return [] if backend is not None else [f"{INSTALL_HINT} ({why}.)"]
    if impl == "triton":
        if importlib.util.find_spec("triton") is None:
            return [
                "attn_impl 'triton' needs the `triton` package (installed with torch's Linux "
                "wheels); set attn_impl to 'auto' or 'torch' here"
            ]
        if dev.type != "cuda" and not _triton_interpreted():
            return [
                f"attn_impl 'triton' runs on CUDA GPUs and this run is on {dev.type}; set "
                "attn_impl to 'auto' (picks what runs here) or 'torch' (TRITON_INTERPRET=1 runs "
                "the kernels in Triton's slow CPU interpreter, for tests only)"
            ]
    return []


def choose_impl(
    requested: str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ImplChoice:
    """The implementation that runs for `requested` on `device` (default: this machine's GPU,
    else CPU), with a one-line reason for start-up logs.

    `auto`: flash where flash-attn-4 or flash-attn 2 imports and the GPU supports it (and the
    inputs are fp16/bf16 when `dtype` is given), else triton on CUDA, else torch. An explicit
    implementation is returned as is when it can run and raises `AttentionUnavailableError`
    (saying how to fix it) when it cannot.
    """
    dev = _as_device(device)
    return _choose(requested, dev.type, dev.index, dtype)


@functools.cache
def _choose(
    requested: str, device_type: str, index: int | None, dtype: torch.dtype | None
) -> ImplChoice:
    dev = torch.device(device_type, index) if index is not None else torch.device(device_type)
    if requested != "auto":
        problems = check_impl_available(requested, dev)
        if problems:
            raise AttentionUnavailableError("; ".join(problems) + ".")
        if requested == "flash" and dev.type == "cuda":  # which FlashAttention, as `auto` says
            backend, why = flash_status(dev.index or 0)
            return ImplChoice("flash", f"explicit; {why}", backend)
        return ImplChoice(_concrete(requested), "explicit")
    if dev.type != "cuda":
        return ImplChoice("torch", "no CUDA" if not torch.cuda.is_available() else dev.type)
    backend, why = flash_status(dev.index or 0)
    half = dtype is None or dtype in (torch.float16, torch.bfloat16)
    if backend is not None and half:
        return ImplChoice("flash", why, backend)
    if importlib.util.find_spec("triton") is not None:
        detail = f"{dtype} inputs, flash takes fp16/bf16" if backend is not None else why
        return ImplChoice("triton", f"CUDA; flash unavailable: {detail}")
    return ImplChoice("torch", f"CUDA without triton; flash unavailable: {why}")


def _concrete(impl: str) -> ConcreteImpl:
    if impl == "torch" or impl == "flash" or impl == "triton":
        return impl
    raise ValueError(_unknown_impl(impl))


def _auto_impl(device: torch.device, dtype: torch.dtype) -> str:
    """`choose_impl("auto")` for one call's tensors; a constant under torch.compile."""
    return choose_impl("auto", device, dtype).impl


# What `torch.compiler.assume_constant_result` does (dynamo runs the function once and uses the
# result as a constant), set directly: the decorator imports torch._dynamo, seconds at import time.
setattr(_auto_impl, "_dynamo_marked_constant", True)  # noqa: B010


def _call_impl(
    impl: str, q: torch.Tensor, k: torch.Tensor, padded: bool, dropout_p: float
) -> ConcreteImpl:
    """The implementation this call runs: the one fall-back-to-torch decision of the package."""
    if padded or dropout_p > 0 or q.shape[1] != k.shape[1]:
        return "torch"  # only the reference takes padding masks, dropout and KV caches
    if impl == "auto":
        return _concrete(_auto_impl(q.device, q.dtype))
    return _concrete(impl)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    impl: AttnImpl = "auto",
    causal: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    window: int | None = None,
    sequence_id: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    alibi_bias_max: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention through the implementation named by `impl`.

    `alibi_bias_max`: the MPT `alibi_bias_max` that `alibi_slopes` were built with, where the
    caller knows it (flash-attn-4 computes the slopes in its kernel from it).

    `key_padding_mask` (B, S) bool (True = real token), `dropout_p` > 0 and T < S (a KV cache)
    run on `torch`, the one implementation that takes them, whatever `impl` says.
    """
    _check_shapes(q, k, v, sequence_id)
    chosen = _call_impl(impl, q, k, key_padding_mask is not None, dropout_p)
    if chosen == "torch":
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
    kernel: Callable[..., torch.Tensor]
    if chosen == "flash":
        kernel = functools.partial(flash_attention, alibi_bias_max=alibi_bias_max)
    else:
        kernel = _load_triton_kernel()
    return kernel(
        q,
        k,
        v,
        causal=causal,
        alibi_slopes=alibi_slopes,
        window=window,
        sequence_id=sequence_id,
        softmax_scale=softmax_scale,
    )


def packed_attention(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    head_dim: int,
    *,
    impl: AttnImpl = "auto",
    causal: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    window: int | None = None,
    softmax_scale: float | None = None,
    alibi_bias_max: float | None = None,
) -> torch.Tensor | None:
    """`attention()` on a fused projection's output qkv (B, T, (H + 2 * Hkv) * D), or None.

    Where this call would run flash-attn-4, it runs on qkv itself so that the backward writes one
    packed gradient (flash_packed.py; FOUNDRY_FLASH_PACKED_QKV=0 turns it off); elsewhere None,
    and the caller splits qkv and calls `attention()`. Callers keep packed sequences, padding
    masks, dropout and KV caches away.
    """
    from foundry_models.attention.flash import _alibi_parameters, flash_status
    from foundry_models.attention.flash_op import custom_op_enabled
    from foundry_models.attention.flash_packed import packed_enabled, packed_flash_attention

    if not packed_enabled() or custom_op_enabled() or qkv.device.type != "cuda":
        return None
    if qkv.dtype not in (torch.float16, torch.bfloat16):
        return None
    if _call_impl(impl, qkv, qkv, False, 0.0) != "flash":  # reads device, dtype, length
        return None
    if flash_status(qkv.device.index or 0)[0] != "fa4":
        return None
    alibi = None
    if alibi_slopes is not None:
        if heads != kv_heads:
            return None  # flash.py repeats grouped KV heads for ALiBi; not a packed layout
        alibi = _alibi_parameters(alibi_slopes, alibi_bias_max, qkv.shape[1])
    return packed_flash_attention(
        qkv,
        heads,
        kv_heads,
        head_dim,
        causal=causal,
        window=window,
        softmax_scale=softmax_scale,
        alibi=alibi,
    )


def _load_triton_kernel() -> Callable[..., torch.Tensor]:
    try:
        from foundry_models.attention.triton_function import triton_attention
    except ImportError as exc:  # triton missing
        raise AttentionUnavailableError(
            f"attn_impl 'triton' is unavailable here ({exc}). It needs the `triton` package "
            "(installed with torch on Linux) and a CUDA GPU; set attn_impl to 'auto' or 'torch'."
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
