"""foundry-train's one tokenizer loader and its pad-token rule (packages/foundry-train/README.md).

Rule: batches are padded with the tokenizer's pad token; a tokenizer without one pads with its
EOS token, and one without either with id 0. Padded positions carry no loss (their labels are
IGNORE_INDEX), so the choice changes no result.
"""

from __future__ import annotations

from typing import Any, cast

from foundry_train.config.sections import TokenizerConfig
from foundry_train.errors import FoundryError

__all__ = ["load_tokenizer", "pad_token_id"]


def load_tokenizer(cfg: TokenizerConfig) -> Any:
    """The tokenizer of ``cfg`` (transformers' AutoTokenizer); a FoundryError if it cannot load."""
    from transformers import AutoTokenizer

    try:
        # AutoTokenizer.from_pretrained is unannotated in transformers (Unknown).
        return cast(
            Any,
            AutoTokenizer.from_pretrained(  # pyright: ignore[reportUnknownMemberType]
                cfg.name, **cfg.kwargs
            ),
        )
    except (OSError, ValueError) as exc:
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise FoundryError(
            f"tokenizer.name: '{cfg.name}' cannot be loaded ({text}). Give a tokenizer folder "
            "(written by `foundry-data train-tokenizer` or save_pretrained) or a hub id."
        ) from None


def pad_token_id(tokenizer: Any) -> int:
    """The id batches are padded with: pad token, else EOS, else 0."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0
