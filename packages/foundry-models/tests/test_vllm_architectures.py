"""Every Hugging Face export names an architecture that vLLM serves (the hand-off for big deployments).

vLLM picks its model implementation from config.json's `architectures`. The names below are the
decoder-only text-generation keys of vLLM's model registry that the two native targets of
`export_hf` can produce, read from vLLM's source: `_TEXT_GENERATION_MODELS` in
vllm/model_executor/models/registry.py (github.com/vllm-project/vllm, the snapshot at commit
0002bff0b6cb36a3c8a17364de3303664463c412, read on 2026-12-05; the same entries stand in the
0.33 release line). There "MptForCausalLM" (transformers' spelling) and "MPTForCausalLM" map to
vLLM's MPT implementation and "LlamaForCausalLM" to its Llama one.
"""

from __future__ import annotations

import json

import pytest
import torch
from foundry_models import MPTConfig, MPTForCausalLM, export_hf, preset_config
from foundry_models.hf_export import native_arch

VLLM_ARCHITECTURES = {"MptForCausalLM": "mpt", "MPTForCausalLM": "mpt", "LlamaForCausalLM": "llama"}

TINY = {"d_model": 64, "n_heads": 4, "n_layers": 2, "max_seq_len": 32, "vocab_size": 96}
LLAMA_SHAPED = {
    **TINY,
    "norm_type": "rmsnorm",
    "ffn_config": {"ffn_type": "mptglu", "ffn_hidden_size": 96},
    "attn_config": {"alibi": False, "rope": True, "kv_n_heads": 2},
}


@pytest.mark.parametrize(("shape", "arch"), [(TINY, "mpt"), (LLAMA_SHAPED, "llama")])
def test_each_export_names_an_architecture_vllm_serves(tmp_path, shape, arch) -> None:
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(**shape))
    out = export_hf(model, tmp_path / arch)
    architectures = json.loads((out / "config.json").read_text())["architectures"]
    assert len(architectures) == 1
    assert VLLM_ARCHITECTURES.get(architectures[0]) == arch, architectures


@pytest.mark.parametrize("name", ["125m", "350m", "760m", "1b", "3b", "7b"])
def test_every_shipped_preset_exports_to_a_vllm_architecture(name) -> None:
    assert native_arch(preset_config(name)) in set(VLLM_ARCHITECTURES.values())
