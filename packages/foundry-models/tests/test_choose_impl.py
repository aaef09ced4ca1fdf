"""`choose_impl` (what `attn_impl: auto` picks, and why) and `check_impl_available`."""

from __future__ import annotations

import pytest
import torch
from foundry_models import AttentionUnavailableError, MPTForCausalLM, preset_config
from foundry_models.attention import ImplChoice, check_impl_available, choose_impl, dispatch

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")


@no_cuda
def test_auto_is_torch_without_cuda_and_says_why():
    choice = choose_impl("auto")
    assert choice == ImplChoice("torch", "no CUDA")
    assert str(choice) == "torch (no CUDA)"


def test_auto_on_cpu_tensors_is_torch_on_any_machine():
    assert choose_impl("auto", "cpu").impl == "torch"


@no_cuda
@pytest.mark.parametrize("impl", ["flash", "triton"])
def test_explicit_fast_impls_are_refused_on_cpu(impl, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    problems = check_impl_available(impl)
    assert len(problems) == 1
    assert f"attn_impl '{impl}' runs on CUDA GPUs" in problems[0]
    assert "'auto'" in problems[0] and "'torch'" in problems[0]  # says how to fix it
    with pytest.raises(AttentionUnavailableError, match=f"attn_impl '{impl}'"):
        choose_impl(impl)


@pytest.mark.parametrize("impl", ["auto", "torch"])
def test_auto_and_torch_run_anywhere(impl):
    assert check_impl_available(impl, "cpu") == []


def test_explicit_torch_is_kept_with_its_reason():
    assert str(choose_impl("torch", "cpu")) == "torch (explicit)"


def test_unknown_impl_suggests_the_closest():
    (problem,) = check_impl_available("flsh")
    assert "did you mean 'flash'?" in problem and "'flsh'" in problem


def test_auto_rule_on_a_gpu(monkeypatch):
    """The rule on CUDA (no GPU needed: the probe of the flash packages is replaced)."""
    dispatch._choose.cache_clear()
    monkeypatch.setattr(dispatch, "flash_status", lambda index: ("fa4", "flash-attn-4, sm90"))
    try:
        assert str(choose_impl("auto", "cuda:0")) == "flash (flash-attn-4, sm90)"
        fp32 = choose_impl("auto", "cuda:0", torch.float32)
        assert fp32.impl == "triton" and "flash takes fp16/bf16" in fp32.reason
        dispatch._choose.cache_clear()
        monkeypatch.setattr(dispatch, "flash_status", lambda index: (None, "sm80; no flash_attn"))
        assert str(choose_impl("auto", "cuda:0")) == (
            "triton (CUDA; flash unavailable: sm80; no flash_attn)"
        )
    finally:
        dispatch._choose.cache_clear()


@no_cuda
def test_default_model_trains_on_cpu_through_auto():
    config = preset_config("debug", n_layers=1)
    assert config.attn_config["attn_impl"] == "auto"
    model = MPTForCausalLM(config)
    ids = torch.randint(0, config.vocab_size, (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()
