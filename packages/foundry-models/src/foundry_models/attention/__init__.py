"""Attention for foundry models: one dispatcher over three implementations.

- `dispatch.py`: `attention()` (the one call the model makes), `choose_impl()` (what `auto`
  picks, and why) and `check_impl_available()` (why an explicit choice cannot run here).
- `reference.py`: the `torch` implementation (SDPA with an explicit mask), the reference.
- `flash.py`: FlashAttention-4 / flash-attn 2 (optional packages); `flash_packed.py` runs
  flash-attn-4 on a fused q/k/v projection with one packed gradient (`packed_attention()`).
- `triton_*.py`: this project's Triton kernels (`triton_function.triton_attention`), imported
  only when `triton` runs, so importing this package never imports triton.
- `alibi.py`: ALiBi slopes.
"""

from foundry_models.attention.alibi import alibi_slopes
from foundry_models.attention.dispatch import (
    ATTN_IMPLS,
    AttnImpl,
    ConcreteImpl,
    ImplChoice,
    attention,
    check_impl_available,
    choose_impl,
    packed_attention,
)
from foundry_models.attention.reference import attention_bias, torch_attention

__all__ = [
    "ATTN_IMPLS",
    "AttnImpl",
    "ConcreteImpl",
    "ImplChoice",
    "alibi_slopes",
    "attention",
    "attention_bias",
    "check_impl_available",
    "choose_impl",
    "packed_attention",
    "torch_attention",
]
