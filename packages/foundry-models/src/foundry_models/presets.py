"""Named model shapes: MPT's published sizes plus a tiny `debug` model for CPU tests.

Shapes follow llm-foundry's MPT pretraining configs (ALiBi, no biases, low-precision LayerNorm,
GELU MLP with expansion ratio 4, vocabulary 50368, sequence length 2048). The names are the
published sizes; the exact parameter counts are in `PUBLISHED_PARAMS`.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from foundry_models.config import MPTConfig
from foundry_models.errors import MPTConfigError

__all__ = ["PRESETS", "PUBLISHED_PARAMS", "preset_config"]

_SHAPES: dict[str, tuple[int, int, int]] = {
    # name: (d_model, n_heads, n_layers)
    "125m": (768, 12, 12),
    "350m": (1024, 16, 24),
    "760m": (1536, 12, 24),
    "1b": (2048, 16, 24),
    "3b": (2560, 20, 32),
    "7b": (4096, 32, 32),
    "13b": (5120, 40, 40),
    "30b": (7168, 56, 48),
    "70b": (8192, 64, 80),
}

PRESETS: dict[str, dict[str, Any]] = {
    "debug": {
        "d_model": 64,
        "n_heads": 4,
        "n_layers": 2,
        "expansion_ratio": 4,
        "max_seq_len": 128,
        "vocab_size": 512,
    },
    **{
        name: {
            "d_model": d,
            "n_heads": h,
            "n_layers": n,
            "expansion_ratio": 4,
            "max_seq_len": 2048,
            "vocab_size": 50368,
        }
        for name, (d, h, n) in _SHAPES.items()
    },
}

# Published parameter counts (MosaicML's MPT model cards and llm-foundry's size names).
PUBLISHED_PARAMS: dict[str, float] = {
    "125m": 125e6,
    "350m": 350e6,
    "760m": 760e6,
    "1b": 1.3e9,
    "3b": 2.7e9,
    "7b": 6.7e9,
    "13b": 13e9,
    "30b": 30e9,
    "70b": 65e9,
}


def preset_config(name: str, **overrides: Any) -> MPTConfig:
    """The `MPTConfig` of preset `name`, with keyword overrides.

    Nested dicts (`attn_config`, `ffn_config`, `init_config`) are merged key by key, so
    `preset_config("125m", attn_config={"attn_impl": "flash"})` keeps the other attention keys.
    """
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise MPTConfigError(
            f"unknown model preset {name!r}.{hint} Available presets: {', '.join(PRESETS)}."
        )
    kwargs = copy.deepcopy(PRESETS[name])
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
            kwargs[key] = {**kwargs[key], **value}
        else:
            kwargs[key] = value
    return MPTConfig(**kwargs)
