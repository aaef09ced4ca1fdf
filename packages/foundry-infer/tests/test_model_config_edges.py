"""Model directories' edge cases: stop tokens in config.json only, Falcon's multi-query cache,
RoPE scalings torch.onnx cannot trace."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from foundry_infer.errors import ExportError
from foundry_infer.kv_graph import cache_layout
from foundry_infer.model_dir import read_generation_defaults
from foundry_infer.onnx_checks import refuse_untraceable


def test_stop_tokens_of_config_json_without_a_generation_config(tmp_path, tokenizer):
    """transformers and export-onnx stop on config.json's eos_token_id list when there is no
    generation_config.json; so does foundry-infer (it fell back to the tokenizer's one EOS)."""
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [0, 80], "pad_token_id": 3}))
    defaults = read_generation_defaults(tmp_path, tokenizer)
    assert defaults.eos_token_ids == (0, 80) and defaults.pad_token_id == 3
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 5}))
    assert read_generation_defaults(tmp_path, tokenizer).eos_token_ids == (5,)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_generation_defaults(empty, tokenizer).eos_token_ids == (tokenizer.eos_token_id,)


def test_falcon_multi_query_caches_one_head():
    from transformers import FalconConfig

    base = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 99}
    assert cache_layout(FalconConfig(**base, multi_query=True)).num_kv_heads == 1
    assert cache_layout(FalconConfig(**base, multi_query=False)).num_kv_heads == 4
    grouped = FalconConfig(**base, new_decoder_architecture=True, num_kv_heads=2)
    assert cache_layout(grouped).num_kv_heads == 2


@pytest.mark.parametrize("kind", ["dynamic", "longrope", "linear"])
def test_rope_scalings_that_change_at_run_time_are_refused_before_tracing(kind):
    from transformers import LlamaConfig

    scaling = {"rope_type": kind, "factor": 2.0}
    if kind == "longrope":
        scaling.update(short_factor=[1.0] * 8, long_factor=[2.0] * 8)
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
                         vocab_size=99, rope_scaling=scaling)  # fmt: skip
    model = SimpleNamespace(config=config)
    if kind == "linear":  # fixed frequencies: exported as usual
        refuse_untraceable(model)
        return
    with pytest.raises(ExportError, match=f"RoPE scaling is '{kind}'"):
        refuse_untraceable(model)
