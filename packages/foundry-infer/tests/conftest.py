"""Shared fixtures: a byte-level BPE tokenizer and tiny models built here, one briefly trained.

Everything is made from text this project wrote (foundry-infer's own source), in well under a
minute on two CPU cores; expensive artefacts are session-scoped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# <repo>/tests/support is on sys.path: the root conftest puts it there.
from tiny_lm import save_hf_dir, train_byte_bpe, train_on_windows

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SOURCE = Path(__file__).resolve().parents[1] / "src" / "foundry_infer"


def corpus_text() -> str:
    return "\n".join(p.read_text() for p in sorted(SOURCE.glob("*.py")))


@pytest.fixture(scope="session", autouse=True)
def _one_thread_each():
    """Two shared cores: one thread per library avoids oversubscription (much faster here)."""
    import os

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("FOUNDRY_INFER_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus() -> str:
    return corpus_text()


@pytest.fixture(scope="session")
def tokenizer():
    return train_byte_bpe(
        [corpus_text()],
        vocab_size=384,
        special_tokens=["<|endoftext|>", "<|end|>"],
        chat_template=CHAT_TEMPLATE,
    )


@pytest.fixture(scope="session")
def trained_llama_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer Llama (GQA) trained for 300 steps on foundry-infer's source; an HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor(tokenizer(corpus_text()).input_ids)
    losses = train_on_windows(model, ids, steps=300, seq=64, batch=8)
    assert losses[-1] < 3.5, f"training did not learn (loss {losses[-1]:.2f})"
    path = tmp_path_factory.mktemp("llama") / "hf"
    eos = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")]
    return save_hf_dir(model, tokenizer, path, eos)


@pytest.fixture(scope="session")
def llama_onnx_dir(trained_llama_dir, tmp_path_factory) -> Path:
    from foundry_infer import export_onnx

    out = tmp_path_factory.mktemp("llama-onnx") / "onnx"
    report = export_onnx(trained_llama_dir, out, progress=False)
    assert report.max_abs_diff < 1e-4
    return out


@pytest.fixture(scope="session")
def llama_int8_dir(llama_onnx_dir, tmp_path_factory) -> Path:
    from foundry_infer import quantize_onnx

    out = tmp_path_factory.mktemp("llama-int8") / "int8"
    quantize_onnx(llama_onnx_dir, out)
    return out


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=128,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    path = tmp_path_factory.mktemp("gpt2") / "hf"
    return save_hf_dir(GPT2LMHeadModel(config), tokenizer, path, [tokenizer.eos_token_id])


@pytest.fixture(scope="session")
def mpt_dir(tmp_path_factory, tokenizer) -> Path:
    from transformers import MptConfig, MptForCausalLM

    torch.manual_seed(2)
    config = MptConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        n_layers=2,
        n_heads=4,
        max_seq_len=128,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = MptForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so greedy picks are clear-cut
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    path = tmp_path_factory.mktemp("mpt") / "hf"
    return save_hf_dir(model, tokenizer, path, [tokenizer.eos_token_id])
