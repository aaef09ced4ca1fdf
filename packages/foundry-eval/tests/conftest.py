"""Shared fixtures: a byte-level BPE tokenizer and a tiny Llama trained on eval text (session scope)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

# <repo>/tests/support is on sys.path: the root conftest puts it there.
from eval_task_data import serve_task_files, write_synthetic_data
from tiny_lm import train_byte_bpe, train_on_windows

# Every test runs on generated task files (tests/support/eval_task_data.py): none needs the
# real benchmark files, and none skips without them.
TRAIN_FILES = [
    "language_understanding/lambada_openai.jsonl",
    "commonsense_reasoning/piqa.jsonl",
    "world_knowledge/arc_easy.jsonl",
    "language_understanding/winograd_wsc.jsonl",
]


def _training_text(root: Path) -> list[str]:
    texts = []
    for rel in TRAIN_FILES:
        with (root / rel).open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if "context" in row:
                    texts.append(row["context"] + " " + row["continuation"])
                elif "query" in row:
                    texts.append(row["query"].strip() + "\nAnswer: " + row["choices"][row["gold"]])
                else:
                    texts.append(row["context_options"][row["gold"]] + " " + row["continuation"])
    return texts


def _train_model(tokenizer, texts: list[str], steps: int = 200):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(cfg)
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]
    losses = train_on_windows(model, torch.tensor(ids), steps=steps, seq=64, batch=16)
    return model, losses


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated task files for every task of the shipped gauntlet."""
    root = tmp_path_factory.mktemp("eval-data")
    write_synthetic_data(root)
    return root


@pytest.fixture
def human_eval_task(data_root: Path):
    """The synthetic human_eval file as a code task: two generations per problem, pass@1 and
    pass@2. Keyword overrides (e.g. ``limit``) go through ``human_eval_task(limit=3)``."""
    from foundry_eval.tasks import load_tasks

    def make(**extra: object):
        spec = {
            "label": "human_eval",
            "dataset_uri": "programming/human_eval.jsonl",
            "icl_task_type": "code_evaluation",
            "generations_per_sample": 2,
            "pass_at_k": [1, 2],
            **extra,
        }
        (task,) = load_tasks([spec], data_root)
        return task

    return make


@pytest.fixture(scope="session")
def task_server(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The generated task files served as llm-foundry publishes them: ``<url>/<relative path>``
    under ``server.url + "/scripts/eval/local_data"``."""
    server = serve_task_files(data_root, tmp_path_factory.mktemp("site"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A Llama with a trained BPE tokenizer, trained >= 200 steps, saved as an HF directory."""
    import torch

    torch.set_num_threads(1)  # the CI box has 2 shared cores; more threads thrash
    start = time.perf_counter()
    texts = _training_text(data_root)
    tokenizer = train_byte_bpe(texts, vocab_size=1024, special_tokens=["<|endoftext|>"])
    model, losses = _train_model(tokenizer, texts)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "train_log.json").write_text(
        json.dumps({"losses": losses, "seconds": time.perf_counter() - start})
    )
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    model.eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)
