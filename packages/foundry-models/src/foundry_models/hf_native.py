"""What the native architectures (transformers' MPT and Llama) share in the mapping."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from foundry_models.config import MPTConfig

__all__ = ["common_blockers", "special_tokens", "token_ids"]


def common_blockers(config: MPTConfig) -> list[str]:
    a = config.attn_options
    out: list[str] = []
    if a.qk_ln:
        out.append("attn_config.qk_ln=True (no QK-norm)")
    if a.sliding_window_size is not None:
        out.append(f"attn_config.sliding_window_size={a.sliding_window_size} (no sliding window)")
    if config.logit_scale is not None and config.tie_word_embeddings:
        out.append(
            f"logit_scale={config.logit_scale!r} with tied embeddings (no logit scale; with "
            "untied embeddings it is folded into lm_head)"
        )
    return out


def special_tokens(config: PretrainedConfig) -> dict[str, Any]:
    return {
        key: getattr(config, key, None) for key in ("bos_token_id", "eos_token_id", "pad_token_id")
    }


def token_ids(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: raw.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
