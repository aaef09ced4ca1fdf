"""MPTForCausalLM on CPU: loss, KV cache, generate, checkpointing, meta init, packing, LoRA."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from foundry_models import ExportError, FoundryError, MPTForCausalLM, export_hf, preset_config
from foundry_models.blocks import MPTBlock
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicCache

ROPE_GQA = {
    "norm_type": "rmsnorm",
    "ffn_config": {"ffn_type": "mptglu", "ffn_hidden_size": 96},
    "attn_config": {"alibi": False, "rope": True, "kv_n_heads": 2},
}
VARIANTS = {
    "alibi": {},
    "rope_gqa": ROPE_GQA,
    "qkln_clip_window_bias": {
        "no_bias": False,
        "norm_type": "layernorm",
        "attn_config": {"qk_ln": True, "clip_qkv": 4.0, "sliding_window_size": 5},
    },
}


def _model(seed: int = 0, **overrides) -> MPTForCausalLM:
    torch.manual_seed(seed)
    return MPTForCausalLM(preset_config("debug", **overrides)).eval()


def _tokens(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 512, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_loss_is_shifted_cross_entropy_ignoring_minus_100():
    model = _model()
    x = _tokens()
    labels = x.clone()
    labels[:, :4] = -100
    out = model(input_ids=x, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 512)
    expected = F.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, expected)
    assert out.logits.shape == (2, 12, 512)


def test_training_reduces_loss():
    model = _model().train()
    x = _tokens(2, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(8):
        loss = model(input_ids=x, labels=x).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kv_cache_decoding_matches_full_forward(variant):
    model = _model(**VARIANTS[variant])
    x = _tokens(2, 10)
    with torch.no_grad():
        full = model(input_ids=x).logits
        cache = DynamicCache()
        prefix = model(input_ids=x[:, :6], past_key_values=cache, use_cache=True)
        steps = [prefix.logits]
        for i in range(6, 10):
            steps.append(model(input_ids=x[:, i : i + 1], past_key_values=cache).logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_autocast_feeds_low_precision_qkv_to_attention(monkeypatch):
    import foundry_models.blocks as blocks

    seen = []
    real = blocks.attention

    def spy(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(blocks, "attention", spy)
    model = _model(**ROPE_GQA)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        model(input_ids=_tokens())
    assert seen == [(torch.bfloat16,) * 3] * 2


def test_generate_with_left_padding_matches_unpadded_alibi():
    model = _model()
    a, b = _tokens(1, 7, seed=3), _tokens(1, 4, seed=4)
    pad = torch.zeros(1, 3, dtype=torch.long)
    batch = torch.cat([a, torch.cat([pad, b], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    out = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False)
    alone_a = model.generate(a, max_new_tokens=6, do_sample=False)
    alone_b = model.generate(b, max_new_tokens=6, do_sample=False)
    assert torch.equal(out[0, 7:], alone_a[0, 7:])
    assert torch.equal(out[1, 7:], alone_b[0, 4:])
    with pytest.raises(FoundryError, match="use the default DynamicCache"):
        model.generate(a, max_new_tokens=2, cache_implementation="static")


def test_packed_sequences_do_not_attend_to_each_other():
    for overrides in ({}, ROPE_GQA):
        cfg = dict(overrides)
        cfg["attn_config"] = {**cfg.get("attn_config", {}), "attn_uses_sequence_id": True}
        model = _model(**cfg)
        a, b = _tokens(1, 5, seed=5), _tokens(1, 7, seed=6)
        packed = torch.cat([a, b], dim=1)
        seq_id = torch.tensor([[0] * 5 + [1] * 7])
        with torch.no_grad():
            logits = model(input_ids=packed, sequence_id=seq_id).logits
            la, lb = model(input_ids=a).logits, model(input_ids=b).logits
            unmasked = model(input_ids=packed).logits
        assert torch.allclose(logits, torch.cat([la, lb], dim=1), atol=1e-5)
        assert not torch.allclose(unmasked[:, 5:], lb, atol=1e-3)


def test_gradient_checkpointing_per_block_and_via_transformers():
    x = _tokens(2, 8)

    def grads(model):
        model.train()
        model.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    ref = grads(_model())
    model = _model()
    calls = []
    model.transformer.blocks[1].register_forward_pre_hook(lambda *a: calls.append(1))
    model.transformer.blocks[1].gradient_checkpointing = True
    got = grads(model)
    assert len(calls) == 2  # recomputed in backward
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ref, got, strict=True))

    model = _model()
    with warnings.catch_warnings():  # a deprecated alias since transformers 5.2x
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable()
    assert all(b.gradient_checkpointing for b in model.transformer.blocks)
    calls.clear()
    model.transformer.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    got = grads(model)
    assert len(calls) == 2
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ref, got, strict=True))


def test_meta_construction_then_explicit_init():
    config = preset_config("debug", init_config={"name": "small_init_", "emb_init_std": 0.01})
    with torch.device("meta"):
        model = MPTForCausalLM(config)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights_()
    std = math.sqrt(2 / (5 * 64))
    block = model.transformer.blocks[0]
    assert abs(block.attn.Wqkv.weight.std().item() - std) < 0.15 * std
    residual = block.attn.out_proj.weight.std().item()
    assert abs(residual - std / math.sqrt(4)) < 0.2 * std / 2  # divided by sqrt(2 * n_layers)
    assert abs(model.transformer.wte.weight.std().item() - 0.01) < 0.001
    assert torch.equal(block.norm_1.weight, torch.ones(64))
    x = _tokens()
    assert torch.isfinite(model(input_ids=x, labels=x).loss)


def test_param_init_fn_module_by_module_equals_init_weights():
    # FSDP's meta init: each module is moved off meta on its own, then param_init_fn(module).
    config = preset_config("debug", init_config={"name": "kaiming_normal_", "emb_init_std": 0.02})
    torch.manual_seed(3)
    whole = MPTForCausalLM(config)
    torch.manual_seed(0)
    whole.init_weights_()
    with torch.device("meta"):
        unit = MPTForCausalLM(config)
    torch.manual_seed(0)
    for module in unit.modules():
        module.to_empty(device="cpu", recurse=False)
        unit.param_init_fn(module)
    unit.tie_weights()
    expected = dict(whole.named_parameters())
    got = dict(unit.named_parameters())
    assert sorted(got) == sorted(expected)
    for name, param in got.items():
        assert torch.equal(param, expected[name]), name
    x = _tokens()
    assert torch.isfinite(unit(input_ids=x, labels=x).loss)


@pytest.mark.parametrize(
    "scheme", ["normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_"]
)
def test_init_schemes_produce_expected_scale(scheme):
    model = _model(init_config={"name": scheme, "init_div_is_residual": False})
    model.init_weights_()
    w = model.transformer.blocks[0].ffn.up_proj.weight  # (256, 64)
    expected = {
        "normal_": 0.02,
        "kaiming_normal_": math.sqrt(2 / 64),
        "kaiming_uniform_": math.sqrt(2 / 64),
        "xavier_normal_": math.sqrt(2 / (64 + 256)),
    }[scheme]
    assert abs(w.std().item() - expected) < 0.1 * expected


def test_max_seq_len_is_enforced_and_can_be_raised_at_load(tmp_path):
    model = _model(max_seq_len=16)
    long = _tokens(1, 20)
    with pytest.raises(FoundryError, match="max_seq_len=20"):
        model(input_ids=long)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, max_seq_len=64)
    assert isinstance(reloaded, MPTForCausalLM)
    assert reloaded.config.max_seq_len == 64
    with torch.no_grad():
        same = reloaded(input_ids=long[:, :16]).logits
        assert torch.allclose(same, model(input_ids=long[:, :16]).logits, atol=1e-6)
        assert reloaded(input_ids=long).logits.shape == (1, 20, 512)


def test_untied_head_logit_scale_and_low_precision_norm_under_autocast():
    model = _model(tie_word_embeddings=False, logit_scale="inv_sqrt_d_model")
    assert model.lm_head is not None
    x = _tokens()
    with torch.no_grad():
        h = model.transformer(input_ids=x).last_hidden_state
        expected = model.lm_head(h) / 8.0
        assert torch.allclose(model(input_ids=x).logits, expected, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=x).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_fsdp_and_checkpointing_hooks_select_blocks():
    model = _model()
    selected = [m for m in model.modules() if model.fsdp_wrap_fn(m)]
    assert len(selected) == 2 and all(isinstance(m, MPTBlock) for m in selected)
    assert not model.activation_checkpointing_fn(model.transformer.wte)
    assert model.activation_checkpointing_fn(model.transformer.blocks[0])


def test_peft_lora_attaches_to_named_modules_and_trains(tmp_path):
    peft = pytest.importorskip("peft")
    model = _model().train()
    lora = peft.get_peft_model(
        model,
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["Wqkv", "out_proj"], lora_dropout=0.0),
    )
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # 2 blocks x 2 modules x (A, B)
    before = {n: p.detach().clone() for n, p in lora.named_parameters()}
    x = _tokens(4, 16)
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(10):
        loss = lora(input_ids=x, labels=x).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    for n, p in lora.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == ("lora_" in n), n
    with pytest.raises(ExportError, match="merge_and_unload"):
        export_hf(lora, tmp_path / "lora")
    merged = lora.merge_and_unload()
    assert isinstance(merged, MPTForCausalLM)
    assert (export_hf(merged, tmp_path / "merged") / "config.json").exists()
