"""FP8 training: the transformer blocks' linear layers as torchao float8 linears.

`fp8: {recipe: tensorwise | rowwise}` converts every `nn.Linear` inside the transformer blocks
whose input and output widths are multiples of 16 (what float8 matmuls need) into torchao's
`Float8Linear`, which keeps its weight in the training precision and casts to float8 inside each
matmul. The embedding and the output head stay as they are (their accuracy matters most and
the vocabulary is rarely a multiple of 16). The weights, and so checkpoints and Hugging Face
exports, keep their usual dtype: a `Float8Linear` has the same parameters as the `nn.Linear` it
replaces. MFU is still counted against the bf16 peak.
"""

from __future__ import annotations

from torch import nn

__all__ = ["apply_fp8"]


def _eligible(module: nn.Module, name: str) -> bool:
    if not isinstance(module, nn.Linear) or "lm_head" in name:
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def apply_fp8(network: nn.Module, recipe: str) -> int:
    """Swap the eligible linears of `network` for float8 ones in place; returns how many."""
    from torchao.float8 import (  # pyright: ignore[reportMissingTypeStubs]
        Float8LinearConfig,
        convert_to_float8_training,
    )

    count = 0

    def keep(module: nn.Module, name: str) -> bool:
        nonlocal count
        chosen = _eligible(module, name)
        count += int(chosen)
        return chosen

    config = Float8LinearConfig.from_recipe_name(recipe)  # pyright: ignore[reportUnknownMemberType]
    convert_to_float8_training(network, config=config, module_filter_fn=keep)
    return count
