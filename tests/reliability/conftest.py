"""Fixtures of the cross-package reliability tests.

Everything is built here from text the project wrote (its docs and sources): a byte-level BPE
tokenizer, a pretraining MDS dataset written by ``foundry-data``, a tiny random Llama directory,
and a private SeaweedFS S3 server that tests may stop and start again (the session-wide
``s3_server`` of the root conftest is shared by other tests, so it is never stopped). Both servers
are ``tests/support/s3_test_server.py``'s ``S3Server``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/support is on sys.path: the root conftest puts it there.
from s3_test_server import S3Server, require_weed
from tiny_lm import save_hf_dir, train_byte_bpe

REPO = Path(__file__).resolve().parents[2]
SEQ = 32


def project_text() -> str:
    """The project's own docs and sources: the built-in corpus."""
    parts = [p.read_text() for p in sorted((REPO / "docs").glob("*.md"))]
    parts += [p.read_text() for p in sorted((REPO / "packages").glob("*/src/*/*.py"))]
    return "\n\n".join(parts)


def train_tokenizer(out: Path, vocab_size: int = 512) -> Path:
    """A byte-level BPE tokenizer trained on the project's text, saved for AutoTokenizer."""
    tok = train_byte_bpe(
        [project_text()],
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        pad_token="<|pad|>",
        chat_template=(
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        ),
    )
    tok.save_pretrained(out)
    return out


def foundry_data(*args: str | Path | int) -> None:
    """Run ``foundry-data ARGS`` in this process; it must succeed."""
    from foundry_data.cli import main

    assert main([*map(str, args), "--no-progress"]) == 0


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's text as a .jsonl corpus, one document per source file."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    docs = [p.read_text() for p in sorted((REPO / "packages").glob("*/src/*/*.py"))]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="session")
def pretrain_dir(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path, tokenizer_dir: Path):
    """A pretraining MDS dataset (SEQ tokens per sample, raw shards, default hashes)."""
    out = tmp_path_factory.mktemp("mds") / "pretrain"
    foundry_data(
        "convert", corpus_file, out, "--tokenizer", tokenizer_dir, "--concat-tokens", SEQ,
        "--workers", "1", "--compression", "none", "--shard-size", "64KiB",
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A 2-layer random Llama (GQA) with the tokenizer and a generation config: an HF directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("llama") / "tiny-llama"
    return save_hf_dir(LlamaForCausalLM(cfg), tok, out, tok.eos_token_id)


@pytest.fixture(scope="module")
def restartable_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A private S3 server that tests kill (``stop()``: SIGKILL) and ``start()`` again on the same
    ports and data folder. Its client makes one attempt with short timeouts."""
    server = S3Server(
        require_weed(),
        tmp_path_factory.mktemp("weed"),
        access_key="rel-test",
        secret_key="rel-test-secret",
        bucket="reliability",
        fail_fast=True,
    )
    with server:
        yield server
