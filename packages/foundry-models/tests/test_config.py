"""MPTConfig: defaults, serialisation and config-time validation."""

from __future__ import annotations

import pytest
from foundry_models import MPTConfig, MPTConfigError, preset_config
from transformers import AutoConfig


def test_defaults_fill_every_nested_key_and_round_trip(tmp_path):
    config = MPTConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=100, max_seq_len=32)
    assert config.attn_config["attn_impl"] == "auto"
    assert config.attn_options.kv_n_heads == 4
    assert config.ffn_options.hidden_size == 256
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, MPTConfig)
    assert loaded.model_type == "foundry_mpt"
    assert loaded.attn_config == config.attn_config
    assert loaded.to_dict()["ffn_config"] == config.ffn_config


def test_rope_scaling_pins_original_length():
    config = MPTConfig(
        d_model=64,
        n_heads=4,
        max_seq_len=32,
        attn_config={
            "alibi": False,
            "rope": True,
            "rope_scaling": {"type": "dynamic", "factor": 2},
        },
    )
    assert config.attn_options.rope_scaling == {
        "type": "dynamic",
        "factor": 2,
        "original_max_seq_len": 32,
    }
    config.max_seq_len = 128  # raising the limit later leaves the scaling base alone
    assert config.attn_options.rope_scaling["original_max_seq_len"] == 32


BAD = [
    ({"d_model": 100, "n_heads": 16}, "multiple of n_heads"),
    ({"n_layers": 0}, "n_layers must be a positive integer"),
    ({"attn_config": {"alibi": True, "rope": True}}, "both true"),
    ({"attn_config": {"kv_n_heads": 3}}, "divisor of n_heads"),
    ({"attn_config": {"attn_impl": "xformers"}}, "attn_impl must be one of"),
    ({"attn_config": {"attn_impl": "flash", "attn_pdrop": 0.1}}, "needs attn_impl='torch'"),
    ({"attn_config": {"rope_scaling": {"type": "linear", "factor": 2}}}, "rope is false"),
    (
        {"attn_config": {"alibi": False, "rope": True, "rope_scaling": {"type": "yarn"}}},
        "'type' in",
    ),
    (
        {"attn_config": {"alibi": False, "rope": True, "rope_scaling": {"type": "linear"}}},
        "factor must be a positive number",
    ),
    ({"attn_config": {"sliding_window_size": 0}}, "sliding_window_size must be"),
    ({"attn_config": {"clip_qkv": -1}}, "clip_qkv must be positive"),
    ({"attn_config": {"alibbi": True}}, "did you mean 'alibi'"),
    ({"ffn_config": {"expansion_ratio": 2}}, "set expansion_ratio at the top level"),
    ({"ffn_config": {"ffn_type": "moe"}}, "ffn_type must be one of"),
    ({"expansion_ratio": 1.3, "d_model": 64, "n_heads": 4}, "is not an integer"),
    ({"norm_type": "batchnorm"}, "norm_type must be one of"),
    ({"init_config": {"name": "orthogonal_"}}, "init_config.name must be one of"),
    ({"logit_scale": "huge"}, "logit_scale must be"),
    ({"resid_pdrop": 1.5}, "resid_pdrop must be in"),
    ({"learned_pos_emb": True}, "learned_pos_emb=True is not supported"),
    ({"attn_config": []}, "attn_config must be a mapping"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[m for _, m in BAD])
def test_invalid_configs_fail_at_construction(kwargs, message):
    with pytest.raises(MPTConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MPTConfig(**kwargs)


def test_all_problems_reported_at_once():
    with pytest.raises(MPTConfigError) as err:
        MPTConfig(n_layers=-1, norm_type="x", attn_config={"clip_qkv": 0})
    text = str(err.value)
    assert "n_layers" in text and "norm_type" in text and "clip_qkv" in text


def test_preset_overrides_merge_nested_dicts():
    config = preset_config("125m", attn_config={"attn_impl": "flash"}, max_seq_len=4096)
    assert config.attn_config["attn_impl"] == "flash"
    assert config.attn_config["alibi"] is True  # untouched keys keep the preset's value
    assert config.max_seq_len == 4096 and config.d_model == 768


def test_unknown_preset_suggests_a_name():
    with pytest.raises(MPTConfigError, match="Did you mean '125m'"):
        preset_config("125M")


def test_later_assignments_merge_sections_and_are_validated(tmp_path):
    config = preset_config("debug", norm_type="rmsnorm", attn_config={"alibi": False, "rope": True})
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(
        tmp_path, attn_config={"attn_impl": "triton"}, max_seq_len=4096
    )
    assert loaded.attn_config["attn_impl"] == "triton"
    assert loaded.attn_config["rope"] is True and loaded.attn_config["alibi"] is False
    assert loaded.max_seq_len == 4096
    assert "_foundry_validated" not in loaded.to_json_string()
    with pytest.raises(MPTConfigError, match="did you mean 'attn_impl'"):
        AutoConfig.from_pretrained(tmp_path, attn_config={"atn_impl": "torch"})
    with pytest.raises(MPTConfigError, match="max_seq_len must be a positive integer"):
        loaded.max_seq_len = 0
    with pytest.raises(MPTConfigError, match="both true"):
        loaded.attn_config = {"alibi": True}
    assert loaded.attn_config["alibi"] is False and loaded.max_seq_len == 4096  # unchanged
