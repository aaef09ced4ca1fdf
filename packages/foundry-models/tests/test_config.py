"""MPTConfig: defaults, serialisation and config-time validation."""

from __future__ import annotations

import pytest
from foundry_models import MPTConfig, MPTConfigError, MPTOptions, preset_config
from foundry_models.options import AttentionOptions
from transformers import AutoConfig


def test_defaults_fill_every_nested_key_and_round_trip(tmp_path):
    config = MPTConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=100, max_seq_len=32)
    assert config.attn_config["attn_impl"] == "auto"
    assert config.attn_options.kv_n_heads == 4
    assert config.ffn_options.ffn_hidden_size == 256
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
    ({"n_layers": 0}, "n_layers: expected a positive integer, got 0"),
    ({"attn_config": {"alibi": True, "rope": True}}, "both true"),
    ({"attn_config": {"kv_n_heads": 3}}, "divisor of n_heads"),
    ({"attn_config": {"attn_impl": "xformers"}}, "attn_config.attn_impl: expected one of"),
    ({"attn_config": {"attn_impl": "flash", "attn_pdrop": 0.1}}, "needs attn_impl='torch'"),
    ({"attn_config": {"rope_scaling": {"type": "linear", "factor": 2}}}, "rope is false"),
    (
        {"attn_config": {"alibi": False, "rope": True, "rope_scaling": {"type": "yarn"}}},
        "rope_scaling.type: expected one of 'linear'",
    ),
    (
        {"attn_config": {"alibi": False, "rope": True, "rope_scaling": {"type": "linear"}}},
        "rope_scaling.factor: expected a positive number",
    ),
    ({"attn_config": {"sliding_window_size": 0}}, "sliding_window_size: expected a positive"),
    ({"attn_config": {"clip_qkv": -1}}, "clip_qkv: expected a positive number or null"),
    ({"attn_config": {"alibbi": True}}, "did you mean 'alibi'"),
    ({"ffn_config": {"expansion_ratio": 2}}, "set expansion_ratio at the top level"),
    ({"ffn_config": {"ffn_type": "moe"}}, "ffn_type: expected one of"),
    ({"expansion_ratio": 1.3, "d_model": 64, "n_heads": 4}, "is not an integer"),
    ({"norm_type": "batchnorm"}, "norm_type: expected one of"),
    ({"init_config": {"name": "orthogonal_"}}, "init_config.name: expected one of"),
    ({"logit_scale": "huge"}, "logit_scale: expected a positive number"),
    ({"resid_pdrop": 1.5}, "resid_pdrop: expected a number in"),
    ({"learned_pos_emb": True}, "learned_pos_emb=True is not supported"),
    ({"attn_config": []}, "attn_config: expected a mapping"),
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
    with pytest.raises(MPTConfigError, match="max_seq_len: expected a positive integer"):
        loaded.max_seq_len = 0
    with pytest.raises(MPTConfigError, match="both true"):
        loaded.attn_config = {"alibi": True}
    assert loaded.attn_config["alibi"] is False and loaded.max_seq_len == 4096  # unchanged


# ---------------------------------------------------------------- MPTOptions (the typed options)


def test_options_report_every_problem_with_key_expected_and_given():
    with pytest.raises(MPTConfigError) as err:
        MPTOptions.from_dict(
            {
                "d_model": 65,
                "n_layers": "2",
                "attn_config": {"attn_impl": "flsh", "qk_ln": "yes", "alibbi": True},
                "ffn_config": {"ffn_hidden_size": 2.5},
            }
        )
    by_key = {p.key: p for p in err.value.problems}
    assert set(by_key) == {
        "d_model",
        "n_layers",
        "attn_config.attn_impl",
        "attn_config.qk_ln",
        "attn_config.alibbi",
        "ffn_config.ffn_hidden_size",
    }
    impl = by_key["attn_config.attn_impl"]
    assert impl.given == "flsh" and impl.hint == "did you mean 'flash'?"
    assert "'auto', 'torch', 'flash', 'triton'" in impl.expected
    assert by_key["d_model"].expected == "a multiple of n_heads (16)"
    assert by_key["n_layers"].given == "2" and by_key["n_layers"].expected == "a positive integer"
    assert by_key["attn_config.alibbi"].unknown and "'alibi'" in by_key["attn_config.alibbi"].hint
    text = str(err.value)
    assert "attn_config.attn_impl: expected one of" in text and "got 'flsh'" in text


def test_options_round_trip_the_config_layout():
    opts = MPTOptions.from_dict({"d_model": 64, "n_heads": 4, "attn_config": {"kv_n_heads": 2}})
    assert opts.attn.kv_n_heads == 2 and opts.kv_heads == 2 and opts.head_dim == 16
    assert opts.attn.attn_impl == "auto" and opts.norm.norm_type == "low_precision_layernorm"
    config = MPTConfig.from_options(opts)
    assert config.options == opts
    assert MPTOptions.from_dict(config.options.to_dict()) == opts
    assert config.to_dict()["attn_config"] == opts.to_dict()["attn_config"]
    assert opts.replace(attn_config={"rope": True, "alibi": False}).attn.kv_n_heads == 2


def test_options_constructed_directly_are_checked_too():
    with pytest.raises(MPTConfigError, match="d_model: expected a multiple of n_heads"):
        MPTOptions(d_model=65)
    with pytest.raises(MPTConfigError, match="attn_config.attn_impl"):
        MPTOptions(attn=AttentionOptions(attn_impl="flsh"))  # type: ignore[arg-type]


def test_saved_config_json_keeps_its_layout(tmp_path):
    """config.json still has llm-foundry's layout (existing exports and checkpoints load)."""
    import json

    preset_config("debug").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {"d_model", "n_heads", "norm_type", "norm_eps", "attn_config", "ffn_config"} <= set(
        saved
    )
    assert "attn" not in saved and "_foundry_options" not in saved
    assert set(saved["attn_config"]) == set(MPTOptions().to_dict()["attn_config"])
    assert MPTConfig.from_pretrained(tmp_path).options == preset_config("debug").options


def test_options_follow_later_assignments():
    config = preset_config("debug")
    config.max_seq_len = 512
    config.use_cache = False  # transformers sets these flags too
    assert config.options.max_seq_len == 512 and config.options.use_cache is False
    config.attn_config = {"attn_impl": "torch"}
    assert config.options.attn.attn_impl == "torch" and config.options.attn.alibi is True


def test_set_options_unties_the_embedding():
    # foundry-train applies model.config_overrides through set_options: an untied head asked
    # for there must give the model its own lm_head (it used to stay tied, silently)
    from foundry_models import MPTForCausalLM

    config = preset_config("debug")
    config.set_options(config.options.replace(tie_word_embeddings=False))
    assert config.tie_word_embeddings is False and config.options.tie_word_embeddings is False
    assert MPTForCausalLM(config).lm_head is not None
    config.set_options(config.options.replace(tie_word_embeddings=True))
    assert config.tie_word_embeddings is True and MPTForCausalLM(config).lm_head is None
