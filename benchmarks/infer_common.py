"""Shared set-up of the foundry-infer benchmarks: a ~125M-parameter model and its ONNX exports.

The model has random weights (speed does not depend on them) and GPT-2-small's shape as a Llama
(12 layers, width 768, 12 heads, SwiGLU 2048, vocab 32000) or GPT-2 itself; its tokenizer is a
byte-level BPE trained on this repository's own source. Built once into --work-dir and reused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    parser.add_argument("--work-dir", default="/tmp/foundry-infer-bench", help="model cache")
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0: default)")


def build_model(arch: str, work_dir: str) -> tuple[Path, Path, Path]:
    """Return (hf_dir, onnx_dir, int8_dir), building whatever is missing."""
    import torch
    from foundry_infer import export_onnx, quantize_onnx

    root = Path(work_dir) / arch
    hf_dir, onnx_dir, int8_dir = root / "hf", root / "onnx", root / "onnx-int8"
    if not hf_dir.exists():
        root.mkdir(parents=True, exist_ok=True)
        tokenizer = _tokenizer()
        torch.manual_seed(0)
        model = _model(arch, tokenizer)
        n = sum(p.numel() for p in model.parameters())
        print(f"built {arch} with {n / 1e6:.1f}M parameters", file=sys.stderr)
        tmp = root / "hf.tmp"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(hf_dir)
    if not onnx_dir.exists():
        report = export_onnx(hf_dir, onnx_dir)
        print(f"fp32 export: max abs diff vs torch {report.max_abs_diff:.3g}", file=sys.stderr)
    if not int8_dir.exists():
        quantize_onnx(onnx_dir, int8_dir)
    return hf_dir, onnx_dir, int8_dir


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = "\n".join(p.read_text() for p in sorted(REPO.glob("packages/*/src/**/*.py")))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([text], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tok


def _model(arch: str, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    eos = tokenizer.eos_token_id
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(eos_token_id=eos, bos_token_id=eos)).eval()
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_id=eos,
        bos_token_id=eos,
    )
    return LlamaForCausalLM(config).eval()


def set_threads(threads: int) -> None:
    import os

    if threads:
        import torch

        torch.set_num_threads(threads)
        os.environ["FOUNDRY_INFER_THREADS"] = str(threads)
