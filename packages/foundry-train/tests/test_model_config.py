"""The model section: typed MPT options at validate time, one resolve_model_config, the
attention start-up line, and every shipped YAML's model built on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from foundry_train.config import load_config, parse_config
from foundry_train.errors import ConfigError
from foundry_train.model import attention_summary, build_network, resolve_model_config
from foundry_train.preflight import preflight_problems

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")


def _minimal(**overrides: object) -> dict:
    return {
        "model": {"name": "mpt", "preset": "debug", "config_overrides": dict(overrides)},
        "tokenizer": {"name": "tok"},
        "train_loader": {"dataset": {"local": "data"}},
        "max_duration": "10ba",
        "global_train_batch_size": 8,
    }


def test_mpt_options_are_checked_at_validate_time_with_dotted_paths() -> None:
    data = _minimal(
        d_model=65,
        n_layers="two",
        attn_config={"attn_impl": "flsh", "alibbi": True},
    )
    data["optimizer"] = {"lr": "fast"}  # an error elsewhere is reported in the same list
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    problems = info.value.problems
    text = "\n".join(problems)
    assert len(problems) == 5, text
    by_key = {p.split(":")[0]: p for p in problems}
    impl = by_key["model.config_overrides.attn_config.attn_impl"]
    assert "expected one of 'auto', 'torch', 'flash', 'triton'" in impl
    assert "did you mean 'flash'?" in impl and "'flsh'" in impl
    assert "expected a multiple of n_heads" in by_key["model.config_overrides.d_model"]
    n_layers = by_key["model.config_overrides.n_layers"]
    assert "expected a positive integer" in n_layers and "'two'" in n_layers
    assert "did you mean 'alibi'?" in by_key["model.config_overrides.attn_config.alibbi"]
    assert "optimizer.lr" in by_key


def test_hf_overrides_stay_free_form() -> None:
    data = _minimal()
    data["model"] = {
        "name": "hf_causal_lm",
        "pretrained_model_name_or_path": "some/dir",
        "config_overrides": {"rope_theta": 5e5, "anything": [1, 2]},
    }
    assert parse_config(data).model.config_overrides["anything"] == [1, 2]


def test_validate_cli_refuses_bad_model_options_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from foundry_train.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_minimal(d_model=65, attn_config={"attn_impl": "flsh"})))
    assert main(["validate", str(path), "--skip-files"]) == 2  # in-process: fast
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "model.config_overrides.attn_config.attn_impl" in err
    assert "model.config_overrides.d_model" in err


def test_one_resolution_for_training_and_preflight() -> None:
    cfg = parse_config(_minimal(attn_config={"kv_n_heads": 2}, ffn_config={"ffn_type": "mptglu"}))
    resolved = resolve_model_config(cfg.model, 64)
    assert resolved.max_seq_len == 64 and resolved.attn_config["kv_n_heads"] == 2  # type: ignore[attr-defined]
    assert resolved.attn_config["alibi"] is True  # type: ignore[attr-defined]  # preset's, kept
    network = build_network(cfg.model, 64)
    assert network.config.to_dict() == resolved.to_dict()


@no_cuda
def test_explicit_fast_attention_is_a_hardware_problem_on_cpu() -> None:
    cfg = parse_config(_minimal(attn_config={"attn_impl": "triton"}))
    problems = preflight_problems(cfg, world_size=1)
    attention = [p for p in problems if p.startswith("model.config_overrides.attn_config")]
    assert len(attention) == 1 and "runs on CUDA GPUs" in attention[0], problems
    assert not any("attn_impl" in p for p in preflight_problems(cfg, 1, hardware=False))
    auto = parse_config(_minimal())
    assert not any("attn_impl" in p for p in preflight_problems(auto, world_size=1))


@no_cuda
def test_startup_line_names_the_attention_choice(
    assets: dict, h: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundry_train.trainer import build_trainer

    cfg = parse_config(h.base_config(assets, None, max_duration="1ba"))  # type: ignore[attr-defined]
    assert attention_summary(cfg.model, cfg.max_seq_len) == "torch (no CUDA)"
    trainer = build_trainer(cfg)
    trainer.close()
    assert "foundry-train: attention: torch (no CUDA); compile: none" in capsys.readouterr().err


def test_startup_line_says_when_flash_attn_4_takes_q_k_v_packed(
    assets: dict, h: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where flash-attn-4 runs (stood in here: CPU has none), the attention words say whether
    q/k/v go to it packed and how to turn that off; RoPE keeps it split."""
    import foundry_models.attention as attention
    from foundry_models.attention.dispatch import ImplChoice

    fa4 = ImplChoice("flash", "flash-attn-4, sm90", "fa4")
    monkeypatch.setattr(attention, "choose_impl", lambda impl, *a, **k: fa4)
    monkeypatch.delenv("FOUNDRY_FLASH_PACKED_QKV", raising=False)
    cfg = parse_config(h.base_config(assets, None, max_duration="1ba"))  # type: ignore[attr-defined]
    packed = "flash (flash-attn-4, sm90; q/k/v packed, FOUNDRY_FLASH_PACKED_QKV=0 splits them)"
    assert attention_summary(cfg.model, cfg.max_seq_len) == packed
    monkeypatch.setenv("FOUNDRY_FLASH_PACKED_QKV", "0")
    assert attention_summary(cfg.model, cfg.max_seq_len) == "flash (flash-attn-4, sm90)"
    monkeypatch.delenv("FOUNDRY_FLASH_PACKED_QKV")
    raw = h.base_config(assets, None, max_duration="1ba")  # type: ignore[attr-defined]
    raw["model"]["config_overrides"] = {"attn_config": {"rope": True, "alibi": False}}
    roped = parse_config(raw)
    assert attention_summary(roped.model, roped.max_seq_len) == "flash (flash-attn-4, sm90)"
    # an explicit `flash` names its backend too (the compile x FSDP matrix sets it so)
    explicit = ImplChoice("flash", "explicit; flash-attn-4, sm90", "fa4")
    monkeypatch.setattr(attention, "choose_impl", lambda impl, *a, **k: explicit)
    assert attention_summary(cfg.model, cfg.max_seq_len) == (
        "flash (explicit; flash-attn-4, sm90; q/k/v packed, FOUNDRY_FLASH_PACKED_QKV=0 splits them)"
    )


def _hf_dir(tmp: Path) -> Path:
    """A config-only Llama directory (transformers' defaults: the 7B shape)."""
    from transformers import LlamaConfig

    LlamaConfig().save_pretrained(tmp)
    return tmp


def _mpt_dir(tmp: Path) -> Path:
    import foundry_models

    foundry_models.preset_config("7b").save_pretrained(tmp)
    return tmp


def test_every_shipped_yaml_builds_its_model_on_the_meta_device(tmp_path: Path) -> None:
    """Each shipped YAML's model, built as training builds it, on the meta device (no memory).

    YAMLs that name a model directory get a config-only directory of the shape they name."""
    import foundry_train

    yamls = sorted(foundry_train.shipped_yamls_dir().rglob("*.yaml"))
    assert len(yamls) >= 9
    for path in yamls:
        cfg = load_config(path)
        mc = cfg.model
        if mc.pretrained_model_name_or_path:
            maker = _hf_dir if mc.name == "hf_causal_lm" else _mpt_dir
            folder = maker(tmp_path / path.stem)
            mc = mc.model_copy(update={"pretrained_model_name_or_path": str(folder)})
            mc = mc.model_copy(update={"pretrained": False, "lora": None})
        # init_device: meta off the GPU path would materialise the weights on the CPU
        mc = mc.model_copy(update={"init_device": "cpu"})
        with torch.device("meta"):
            network = build_network(mc, cfg.max_seq_len)
        params = sum(p.numel() for p in network.parameters())
        assert params > 0, path.name
        assert all(p.device.type == "meta" for p in network.parameters()), path.name


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_training_and_eval_forward_build_no_kv_cache(mode: str) -> None:
    """Composer's eval loop puts the model in eval mode, where a `use_cache: true` config would
    build a key/value cache for every batch (and, compiled, recompile per layer)."""
    from foundry_train.model import build_composer_model

    cfg = parse_config(_minimal(n_layers=2, d_model=32, n_heads=4, vocab_size=64)).model
    composer_model = build_composer_model(cfg, max_seq_len=16)
    assert composer_model.model.config.use_cache  # the generation default stays on
    composer_model.train(mode == "train")
    ids = torch.randint(0, 64, (2, 16))
    out = composer_model({"input_ids": ids, "labels": ids})
    assert getattr(out, "past_key_values", None) is None and getattr(out, "cache", None) is None
    assert torch.isfinite(out.loss)
    # A generation call on the same network still gets its cache.
    composer_model.eval()
    generated = composer_model.model(input_ids=ids)
    assert getattr(generated, "cache", None) or getattr(generated, "past_key_values", None)
