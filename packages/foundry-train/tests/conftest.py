"""Shared fixtures: a tokenizer trained on project text, real MDS datasets, tiny model dirs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
SEQ = 32


def project_text() -> str:
    """Text the project wrote itself (docs and sources), our built-in corpus."""
    parts = [p.read_text() for p in sorted((REPO / "docs").glob("*.md"))]
    parts += [p.read_text() for p in sorted((REPO / "packages").glob("*/src/*/*.py"))]
    return "\n\n".join(parts)


def _train_tokenizer(out: Path, text: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    fast.save_pretrained(out)


def _foundry_data(*args: str) -> None:
    """Run the `foundry-data` command (its console-script entry point, in this process)."""
    from foundry_data.cli import main

    assert main([*args, "--no-progress"]) == 0


def _write_pretraining(root: Path, text: str, seq: int) -> Path:
    src = root / "corpus.txt"
    src.write_text(text)
    out = root / "pretrain"
    _foundry_data(
        "convert",
        str(src),
        str(out),
        "--tokenizer",
        str(root / "tok"),
        "--concat-tokens",
        str(seq),
        "--workers",
        "1",
        "--compression",
        "none",
    )
    return out


def _write_finetuning(root: Path) -> Path:
    src = root / "sft.jsonl"
    rows = [
        {
            "prompt": f"Question {i}: what does the trainer save?",
            "response": f" It saves checkpoint {i}.",
        }
        for i in range(64)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "finetune"
    _foundry_data(
        "convert-finetuning",
        str(src),
        str(out),
        "--tokenizer",
        str(root / "tok"),
        "--max-seq-len",
        str(SEQ),
        "--compression",
        "none",
    )
    return out


def _write_llama(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tokenizer, pretraining + fine-tuning MDS data and a tiny Llama directory."""
    root = tmp_path_factory.mktemp("assets")
    text = project_text()
    _train_tokenizer(root / "tok", text)
    _write_pretraining(root, text, SEQ)
    _write_finetuning(root)
    _write_llama(root / "llama")
    return {
        "root": root,
        "tok": root / "tok",
        "pretrain": root / "pretrain",
        "finetune": root / "finetune",
        "llama": root / "llama",
    }


def base_config(assets: dict[str, Path], save_folder: Path | None, **extra: object) -> dict:
    """A small CPU training config over the session assets."""
    cfg: dict = {
        "run_name": "test-run",
        "max_seq_len": SEQ,
        "model": {"name": "mpt", "preset": "debug"},
        "tokenizer": {"name": str(assets["tok"])},
        "train_loader": {"dataset": {"local": str(assets["pretrain"])}},
        "optimizer": {"name": "decoupled_adamw", "lr": 3e-3, "weight_decay": 0.0},
        "scheduler": {"name": "constant_with_warmup", "t_warmup": "2ba"},
        "max_duration": "10ba",
        "global_train_batch_size": 8,
        "device_train_microbatch_size": 4,
        "precision": "fp32",
        "progress_bar": False,
        "deterministic": True,
        "python_log_level": "info",
    }
    if save_folder is not None:
        cfg["save_folder"] = str(save_folder)
        cfg["save_interval"] = "2ba"
    for key, value in extra.items():
        cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    args: list[str], env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m foundry_train ARGS`` in a fresh process."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "LOCAL_WORLD_SIZE",
            "NODE_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
        )
    }
    # One intra-op thread: CPU reductions then run in a fixed order, so runs compared
    # bit-for-bit (resume vs uninterrupted) cannot differ by thread scheduling.
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.setdefault("MKL_NUM_THREADS", "1")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "foundry_train", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def losses(folder: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss/train/total" in row:
            out[int(row["step"])] = row["loss/train/total"]
    return out


@pytest.fixture(scope="session")
def baseline(assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 10-batch run of the debug MPT, checkpoints every 2 batches (in-process)."""
    import torch
    from foundry_train.config import parse_config
    from foundry_train.trainer import train

    folder = tmp_path_factory.mktemp("baseline") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same single-threaded reduction order as run_cli's processes
    try:
        train(parse_config(base_config(assets, folder)))
    finally:
        torch.set_num_threads(threads)
    return folder


@pytest.fixture(scope="session")
def h() -> object:
    """The helper functions above, for test modules (conftest is not importable by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        base_config=base_config,
        write_config=write_config,
        free_port=free_port,
        run_cli=run_cli,
        losses=losses,
        SEQ=SEQ,
    )


@pytest.fixture(scope="session")
def lora_run(assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-batch LoRA fine-tuning run of the tiny Llama (checkpoint ep0-ba2-rank0.pt)."""
    from foundry_train.config import parse_config
    from foundry_train.trainer import train

    folder = tmp_path_factory.mktemp("lora") / "run"
    cfg = base_config(assets, folder, max_duration="2ba", save_interval="2ba")
    cfg["model"] = {
        "name": "hf_causal_lm",
        "pretrained_model_name_or_path": str(assets["llama"]),
        "pretrained": True,
        "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    }
    cfg["train_loader"] = {"name": "finetuning", "dataset": {"local": str(assets["finetune"])}}
    train(parse_config(cfg))
    return folder
