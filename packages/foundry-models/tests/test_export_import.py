"""Export to transformers' MPT / Llama and import back: fp32 logits within 1e-4, same greedy tokens."""

from __future__ import annotations

import json

import pytest
import torch
from foundry_models import (
    ExportError,
    MPTForCausalLM,
    export_blockers,
    export_hf,
    import_hf,
    preset_config,
    to_native_state_dict,
)
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MptConfig,
    MptForCausalLM,
    PreTrainedTokenizerFast,
)

LLAMA_BASE = {
    "norm_type": "rmsnorm",
    "ffn_config": {"ffn_type": "mptglu", "ffn_hidden_size": 96},
}
MPT_VARIANTS = {
    "tied": {},
    "untied_scaled_clipped_6heads": {
        "d_model": 96,
        "n_heads": 6,
        "tie_word_embeddings": False,
        "logit_scale": 0.5,
        "norm_type": "layernorm",
        "attn_config": {"clip_qkv": 3.0, "softmax_scale": 0.2},
    },
}
LLAMA_VARIANTS = {
    "gqa_tied": {**LLAMA_BASE, "attn_config": {"alibi": False, "rope": True, "kv_n_heads": 2}},
    "bias_untied_linear": {
        **LLAMA_BASE,
        "no_bias": False,
        "tie_word_embeddings": False,
        "logit_scale": 2.0,
        "attn_config": {
            "alibi": False,
            "rope": True,
            "softmax_scale": 0.3,
            "rope_theta": 500.0,
            "rope_scaling": {"type": "linear", "factor": 2.0},
        },
    },
    "mqa_llama3": {
        **LLAMA_BASE,
        "attn_config": {
            "alibi": False,
            "rope": True,
            "kv_n_heads": 1,
            "rope_scaling": {"type": "llama3", "factor": 8.0, "original_max_seq_len": 8},
        },
    },
    "dynamic": {
        **LLAMA_BASE,
        "attn_config": {
            "alibi": False,
            "rope": True,
            "rope_scaling": {"type": "dynamic", "factor": 4.0, "original_max_seq_len": 12},
        },
    },
}


def _model(seed=0, **overrides) -> MPTForCausalLM:
    torch.manual_seed(seed)
    return MPTForCausalLM(preset_config("debug", **overrides)).eval()


def _prompt(batch=2, length=9, seed=1) -> torch.Tensor:
    return torch.randint(3, 512, (batch, length), generator=torch.Generator().manual_seed(seed))


def _assert_same(ours, theirs, length=9, new_tokens=12):
    x = _prompt(length=length)
    with torch.no_grad():
        diff = (ours(input_ids=x).logits - theirs(input_ids=x).logits).abs().max().item()
    assert diff <= 1e-4, diff
    kwargs = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0}
    mine = ours.generate(x, **kwargs)
    native = theirs.generate(x, **kwargs)
    assert mine.shape == (2, length + new_tokens)
    assert torch.equal(mine, native)


def _tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<unk>"])
    text = ["Foundry trains and exports MPT models to native transformers directories."] * 50
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.mark.parametrize("variant", sorted(MPT_VARIANTS))
def test_export_alibi_model_as_transformers_mpt(tmp_path, variant):
    model = _model(**MPT_VARIANTS[variant])
    out = export_hf(model, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mpt" and config["architectures"] == ["MptForCausalLM"]
    native = AutoModelForCausalLM.from_pretrained(out).eval()  # no trust_remote_code
    assert isinstance(native, MptForCausalLM)
    _assert_same(model, native)


@pytest.mark.parametrize("variant", sorted(LLAMA_VARIANTS))
def test_export_rope_model_as_llama(tmp_path, variant):
    model = _model(**LLAMA_VARIANTS[variant])
    out = export_hf(model, tmp_path / "export")
    native = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(native, LlamaForCausalLM)
    # the dynamic variant generates past its original 12 positions, where the base grows
    _assert_same(model, native, length=9, new_tokens=12)


def test_left_padded_generation_matches_native(tmp_path):
    for variant in (MPT_VARIANTS["tied"], LLAMA_VARIANTS["gqa_tied"]):
        model = _model(**variant)
        native = AutoModelForCausalLM.from_pretrained(
            export_hf(model, tmp_path / str(len(variant)))
        ).eval()
        x = _prompt()
        mask = torch.ones_like(x)
        x[1, :3], mask[1, :3] = 0, 0
        kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
        mine = model.generate(x, attention_mask=mask, **kwargs)
        assert torch.equal(mine, native.generate(x, attention_mask=mask, **kwargs))


def test_export_writes_tokenizer_and_generation_config_atomically(tmp_path):
    tokenizer = _tokenizer()
    model = _model(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out = export_hf(model, tmp_path / "export", tokenizer=tokenizer)
    assert AutoTokenizer.from_pretrained(out)("Foundry exports").input_ids
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_id
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    with pytest.raises(ExportError, match="already exists"):
        export_hf(model, out)
    assert export_hf(model, out, overwrite=True) == out
    assert (out / "model.safetensors").exists() and not (out / "tokenizer.json").exists()


def test_config_fitting_neither_architecture_lists_blockers(tmp_path):
    model = _model(
        norm_type="rmsnorm", attn_config={"qk_ln": True, "kv_n_heads": 2, "alibi_bias_max": 6}
    )
    blockers = export_blockers(model.config)
    assert any("norm_type" in b for b in blockers["mpt"])
    assert any("alibi_bias_max=6" in b for b in blockers["mpt"])
    assert any("kv_n_heads" in b for b in blockers["mpt"])
    assert any("rope=False" in b for b in blockers["llama"])
    with pytest.raises(ExportError) as err:
        export_hf(model, tmp_path / "x")
    text = str(err.value)
    for needle in ("as transformers MPT: norm_type", "qk_ln", "as Llama: attn_config.rope=False"):
        assert needle in text
    assert not (tmp_path / "x").exists()


def test_to_native_state_dict_checks_keys():
    model = _model()
    config, weights = to_native_state_dict(model.config, model.state_dict())
    assert config.model_type == "mpt" and "lm_head.weight" not in weights
    broken = dict(model.state_dict())
    broken["model.extra"] = broken.pop("transformer.norm_f.weight")
    with pytest.raises(ExportError, match="missing \\['transformer.norm_f.weight'\\]"):
        to_native_state_dict(model.config, broken)


# ---------------------------------------------------------------------- import
def test_import_transformers_mpt_in_memory_and_from_directory(tmp_path):
    torch.manual_seed(0)
    native = MptForCausalLM(
        MptConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=512, max_seq_len=64)
    ).eval()
    _assert_same(import_hf(native).eval(), native)
    native.save_pretrained(tmp_path / "mpt")
    imported = import_hf(tmp_path / "mpt").eval()
    assert imported.config.attn_options.alibi
    _assert_same(imported, native)


def test_import_transformers_llama_gqa_bias_llama3(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attention_bias=True,
        mlp_bias=True,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    )
    native = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in native.parameters():  # transformers zero-inits biases; make them matter
            p.add_(torch.randn_like(p) * 0.02)
    native.save_pretrained(tmp_path / "llama")
    imported = import_hf(tmp_path / "llama").eval()
    assert imported.config.attn_options.kv_n_heads == 2 and not imported.config.no_bias
    _assert_same(imported, native)


def test_round_trip_restores_the_source_config(tmp_path):
    model = _model(**MPT_VARIANTS["untied_scaled_clipped_6heads"])
    back = import_hf(export_hf(model, tmp_path / "e")).eval()
    assert back.config.logit_scale == 0.5 and back.config.norm_type == "layernorm"
    for (name, a), (_, b) in zip(
        model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_import_llm_foundry_mpt_layout_with_options_transformers_lacks(tmp_path):
    # an llm-foundry checkpoint: model_type "mpt", GQA + RoPE + SwiGLU in its attn/ffn config
    model = _model(
        no_bias=False,
        ffn_config={"ffn_type": "mptglu", "ffn_hidden_size": 128},
        attn_config={"alibi": False, "rope": True, "kv_n_heads": 2, "rope_theta": 1000.0},
    )
    path = tmp_path / "mpt-foundry"
    path.mkdir()
    raw = {
        "model_type": "mpt",
        "d_model": 64,
        "n_heads": 4,
        "n_layers": 2,
        "max_seq_len": 128,
        "vocab_size": 512,
        "no_bias": False,
        "norm_type": "low_precision_layernorm",
        "learned_pos_emb": True,
        "attn_config": {"alibi": False, "rope": True, "kv_n_heads": 2, "rope_theta": 1000},
        "ffn_config": {
            "ffn_type": "mptglu",
            "ffn_hidden_size": 128,
            "ffn_act_fn": {"name": "silu"},
        },
    }
    (path / "config.json").write_text(json.dumps(raw))
    items = list(model.state_dict().items())
    for i, part in enumerate((items[: len(items) // 2], items[len(items) // 2 :])):
        # mosaicml/mpt-7b ships pytorch_model-0000N-of-00002.bin shards
        torch.save(dict(part), path / f"pytorch_model-0000{i + 1}-of-00002.bin")
    imported = import_hf(path).eval()
    x = _prompt()
    with torch.no_grad():
        assert torch.allclose(imported(input_ids=x).logits, model(input_ids=x).logits, atol=1e-6)
    save_file({k: v.contiguous() for k, v in items}, path / "model.safetensors")
    assert torch.equal(import_hf(path).transformer.wte.weight, model.transformer.wte.weight)


def test_import_rejects_unknown_architectures_and_geglu(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ExportError, match="model_type='gpt2'"):
        import_hf(tmp_path)
    geglu = {"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": 512}
    geglu["ffn_config"] = {"ffn_type": "mptglu"}  # llm-foundry's default activation: GELU
    (tmp_path / "config.json").write_text(json.dumps(geglu))
    with pytest.raises(ExportError, match=r"mptglu \+ silu"):
        import_hf(tmp_path)


@pytest.mark.parametrize("variant", sorted(LLAMA_VARIANTS))
def test_llama_round_trip_restores_the_weights(tmp_path, variant):
    """export -> import_hf gives back the model's own weights, for every Llama variant: the
    softmax_scale folded into q_proj on export is unfolded on import (it was applied twice)."""
    model = _model(**LLAMA_VARIANTS[variant])
    back = import_hf(export_hf(model, tmp_path / "e")).eval()
    for (name, a), (_, b) in zip(
        model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    x = _prompt()
    with torch.no_grad():
        assert torch.allclose(back(input_ids=x).logits, model(input_ids=x).logits, atol=1e-5)


def test_native_dynamic_rope_llama_imports_with_its_scaled_length(tmp_path):
    """A native Llama with dynamic RoPE (no foundry config beside it) imports with max_seq_len
    factor x max_position_embeddings, and runs past its original length as transformers does."""
    model = _model(**LLAMA_VARIANTS["dynamic"])  # original 12 positions, factor 4
    out = export_hf(model, tmp_path / "e")
    (out / "foundry_model_config.json").unlink()
    back = import_hf(out).eval()
    assert back.config.max_seq_len == 48
    native = AutoModelForCausalLM.from_pretrained(out).eval()
    x = _prompt(length=40)
    with torch.no_grad():
        diff = (back(input_ids=x).logits - native(input_ids=x).logits).abs().max().item()
    assert diff <= 1e-4, diff


@pytest.mark.parametrize("norm", ["low_precision_rmsnorm", "triton_rmsnorm", "fancy_norm"])
def test_llm_foundry_rmsnorm_names_import_as_rmsnorm(tmp_path, norm):
    """llm-foundry's low-precision and triton RMSNorms are RMSNorms (they imported as
    LayerNorm, with the same weight shapes, so silently wrong); an unknown norm is refused."""
    model = _model(norm_type="rmsnorm")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path / "llmf"
    path.mkdir()
    raw = {"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 2, "max_seq_len": 128,
           "vocab_size": 512, "no_bias": True, "norm_type": norm, "attn_config": {"alibi": True},
           "ffn_config": {"ffn_type": "mptmlp"}}  # fmt: skip
    (path / "config.json").write_text(json.dumps(raw))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors"
    )
    if norm == "fancy_norm":
        with pytest.raises(ExportError, match="norm_type='fancy_norm'"):
            import_hf(path)
        return
    back = import_hf(path).eval()
    assert back.config.norm_type == "rmsnorm"
    x = _prompt()
    with torch.no_grad():
        assert torch.allclose(back(input_ids=x).logits, model(input_ids=x).logits, atol=1e-5)
