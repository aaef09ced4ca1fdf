"""MFU's FLOPs per token (6N + 12 L d S): N leaves out an untied input embedding (a lookup)."""

from __future__ import annotations

import pytest
from foundry_models import MPTForCausalLM, preset_config
from foundry_train.model import flops_per_token
from transformers import LlamaConfig, LlamaForCausalLM


@pytest.mark.parametrize("tied", [True, False])
def test_hf_model_counts_the_embedding_only_when_tied(tied: bool) -> None:
    cfg = LlamaConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters()) - (0 if tied else 1000 * 64)
    assert flops_per_token(model, 128) == 6 * n + 12 * 2 * 64 * 128


def test_mpt_uses_its_own_count() -> None:
    model = MPTForCausalLM(preset_config("debug"))
    assert flops_per_token(model, 128) == model.flops_per_token(128)
