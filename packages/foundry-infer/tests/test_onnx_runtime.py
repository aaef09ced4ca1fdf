"""ONNX export with a KV cache, checked against torch and transformers' own generate."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from foundry_infer import (
    DecodeBatch,
    FoundryError,
    OrtEngine,
    SequenceState,
    TorchEngine,
    export_onnx,
    generate_tokens,
    load_engine,
    load_tokenizer,
    read_generation_defaults,
)

PROMPTS = ["def export_onnx(", "class Scheduler:\n    ", "The graph is", "import numpy as np\n"]


def _hf_greedy(model_dir, tokenizer, prompt: str, n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer(prompt).input_ids])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
    )
    return out[0, ids.shape[1] :].tolist()


def _greedy(engine, tokenizer, prompt: str, n: int) -> list[int]:
    return list(generate_tokens(engine, SequenceState(tokenizer(prompt).input_ids, n)))


def test_ort_greedy_tokens_equal_torch_and_transformers(
    trained_llama_dir, llama_onnx_dir, tokenizer
):
    ort_engine = OrtEngine(llama_onnx_dir, provider="cpu")
    torch_engine = TorchEngine(trained_llama_dir)
    for prompt in PROMPTS[:3]:
        reference = _hf_greedy(trained_llama_dir, tokenizer, prompt, 24)
        assert _greedy(ort_engine, tokenizer, prompt, 24) == reference
        assert _greedy(torch_engine, tokenizer, prompt, 24) == reference


def test_onnx_graph_has_dynamic_axes_and_cache_io(llama_onnx_dir):
    graph = onnx.load(str(llama_onnx_dir / "model.onnx"), load_external_data=False).graph
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name for o in graph.output}
    assert {
        "input_ids",
        "attention_mask",
        "past_key_values.0.key",
        "past_key_values.1.value",
    } <= set(inputs)
    assert {"logits", "present.0.key", "present.1.value"} <= outputs

    def symbolic(name: str, axis: int) -> bool:
        return bool(inputs[name].type.tensor_type.shape.dim[axis].dim_param)

    assert symbolic("input_ids", 0) and symbolic("input_ids", 1)
    assert symbolic("past_key_values.0.key", 0) and symbolic("past_key_values.0.key", 2)


def test_onnx_dir_stands_alone(llama_onnx_dir, tmp_path, tokenizer):
    moved = tmp_path / "copied"
    shutil.copytree(llama_onnx_dir, moved)
    names = {p.name for p in moved.iterdir()}
    assert {"model.onnx", "foundry_onnx.json", "generation_config.json", "tokenizer.json"} <= names
    tok = load_tokenizer(moved)
    assert tok.chat_template == tokenizer.chat_template
    defaults = read_generation_defaults(moved, tok)
    assert tokenizer.eos_token_id in defaults.eos_token_ids
    engine = load_engine(moved)
    assert isinstance(engine, OrtEngine)
    assert len(_greedy(engine, tok, "def ", 5)) >= 1


def _teacher_forced_argmax(engine, ids: list[int]) -> np.ndarray:
    """Argmax after each prefix, stepping through ``ids`` one token at a time with the cache."""
    past = engine.empty_past(1)
    picks = []
    for i, token in enumerate(ids):
        logits, past = engine.step(
            np.array([[token]]), np.ones((1, i + 1), dtype=np.int64), np.array([[i]]), past
        )
        picks.append(int(logits[0].argmax()))
    return np.array(picks)


def test_int8_top1_agrees_with_fp32(llama_onnx_dir, llama_int8_dir, tokenizer, corpus):
    fp32 = OrtEngine(llama_onnx_dir, provider="cpu")
    int8 = OrtEngine(llama_int8_dir, provider="cpu")
    assert int8.manifest.quantization == "int8"
    size = lambda d: (d / "model.onnx").stat().st_size  # noqa: E731
    assert size(llama_int8_dir) < 0.6 * size(llama_onnx_dir)
    ids = tokenizer(corpus).input_ids
    windows = [ids[s : s + 96] for s in range(1000, len(ids) - 96, len(ids) // 5)][:4]
    agree = [(_teacher_forced_argmax(fp32, w) == _teacher_forced_argmax(int8, w)) for w in windows]
    rate = float(np.concatenate(agree).mean())
    assert rate >= 0.95, f"int8 top-1 agreement {rate:.1%} on {sum(map(len, agree))} positions"


def test_batched_decoding_matches_one_at_a_time(llama_onnx_dir, tokenizer):
    engine = OrtEngine(llama_onnx_dir, provider="cpu")
    singles = [_greedy(engine, tokenizer, p, 12) for p in PROMPTS]
    batch = DecodeBatch(engine)
    seqs = [SequenceState(tokenizer(p).input_ids, 12) for p in PROMPTS]
    batch.prefill(seqs[0])
    batch.step()
    batch.prefill(seqs[1])  # joins a running batch with a longer prompt: left padding
    batch.step()
    batch.step()
    batch.prefill(seqs[2])
    batch.prefill(seqs[3])
    while len(batch):
        batch.step()
    assert [s.generated for s in seqs] == singles
    assert batch.largest_batch == 4


def test_export_mpt_alibi(mpt_dir, tmp_path, tokenizer):
    """transformers' MPT (what Foundry exports ALiBi models as); GPT-2 is covered in test_cli."""
    source = mpt_dir
    report = export_onnx(source, tmp_path / "onnx", progress=False)
    assert report.max_abs_diff < 1e-4
    ort_engine, torch_engine = OrtEngine(report.out_dir, provider="cpu"), TorchEngine(source)
    for prompt in PROMPTS[:2]:
        assert _greedy(ort_engine, tokenizer, prompt, 10) == _greedy(
            torch_engine, tokenizer, prompt, 10
        )


def test_export_refuses_existing_output_and_non_models(trained_llama_dir, llama_onnx_dir, tmp_path):
    with pytest.raises(FoundryError, match="already exists"):
        export_onnx(trained_llama_dir, llama_onnx_dir)
    with pytest.raises(FoundryError, match="neither a Hugging Face"):
        export_onnx(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
