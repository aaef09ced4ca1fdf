"""Shared fixtures: a byte-level BPE tokenizer and tiny models built here, one briefly trained.

Everything is made from text this project wrote (foundry-infer's own source), in well under a
minute on two CPU cores; expensive artefacts are session-scoped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|endoftext|>", "<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([corpus_text()], trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _save(model: torch.nn.Module, tokenizer, path: Path, eos: list[int]) -> Path:
    from transformers import GenerationConfig

    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    GenerationConfig(eos_token_id=eos, pad_token_id=eos[0]).save_pretrained(path)
    return path


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
    seq, batch = 64, 8
    starts_max = ids.numel() - seq - 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(300):
        starts = torch.randint(0, starts_max, (batch,), generator=gen)
        x = torch.stack([ids[s : s + seq] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 3.5, f"training did not learn (loss {loss.item():.2f})"
    path = tmp_path_factory.mktemp("llama") / "hf"
    eos = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")]
    return _save(model, tokenizer, path, eos)


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
    return _save(GPT2LMHeadModel(config), tokenizer, path, [tokenizer.eos_token_id])


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
    return _save(model, tokenizer, path, [tokenizer.eos_token_id])
