"""Preset shapes against MPT's published sizes, built on the meta device (no memory)."""

from __future__ import annotations

import pytest
import torch
from foundry_models import PRESETS, PUBLISHED_PARAMS, MPTForCausalLM, preset_config


def _meta_model(name: str, **overrides) -> MPTForCausalLM:
    with torch.device("meta"):
        return MPTForCausalLM(preset_config(name, **overrides))


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_preset_parameter_count_matches_published_size(name):
    model = _meta_model(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    published = PUBLISHED_PARAMS[name]
    assert abs(_n_params(model) - published) / published < 0.03


def test_mpt_7b_exact_parameter_count():
    # mosaicml/mpt-7b (vocabulary 50432) has 6,649,286,656 parameters
    assert _n_params(_meta_model("7b", vocab_size=50432)) == 6_649_286_656


def test_every_preset_is_published_or_debug():
    assert set(PRESETS) == set(PUBLISHED_PARAMS) | {"debug"}


def test_flops_per_token_formula():
    model = _meta_model("1b")
    config = model.config
    n = _n_params(model)  # tied: the embedding matrix is also the output projection
    expected = 6 * n + 12 * config.n_layers * config.d_model * 2048
    assert model.flops_per_token() == expected
    assert model.flops_per_token(4096) == expected + 12 * config.n_layers * config.d_model * 2048
    untied = _meta_model("debug", tie_word_embeddings=False)
    n_untied = _n_params(untied) - untied.config.vocab_size * untied.config.d_model
    assert untied.flops_per_token(16) == 6 * n_untied + 12 * 2 * 64 * 16
