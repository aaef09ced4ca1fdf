"""Tiny language models for tests, built from text in seconds on two CPU cores.

The pieces the test fixtures share: a byte-level BPE tokenizer trained from text, a short AdamW
run on random windows of a token stream, and saving a model as an HF directory. Each fixture keeps
its own model config beside it (the sizes are what its tests rely on). The root conftest puts this
folder on ``sys.path``; import it as ``tiny_lm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast


def train_byte_bpe(
    texts: Sequence[str],
    *,
    vocab_size: int,
    special_tokens: Sequence[str],
    pad_token: str | None = None,
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts``. The first special token is EOS; the pad token is
    ``pad_token`` (one of the special tokens) or else EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    eos = special_tokens[0]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=eos, pad_token=pad_token or eos
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def train_on_windows(
    model: PreTrainedModel,
    ids: torch.Tensor,
    *,
    steps: int,
    seq: int,
    batch: int,
    lr: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` in place: ``steps`` AdamW steps (no weight decay), each on ``batch``
    windows of ``seq`` tokens drawn at random (generator seeded with ``seed``) from the 1-D
    ``ids``. Leaves the model in eval mode; returns each step's loss."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    starts_max = ids.numel() - seq - 1
    losses: list[float] = []
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, starts_max, (batch,), generator=gen)
        x = torch.stack([ids[s : s + seq] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def save_hf_dir(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    path: Path,
    eos_token_id: int | list[int],
) -> Path:
    """Save model, tokenizer and a generation config (``eos_token_id``; pad = the first EOS)
    as an HF directory at ``path``."""
    from transformers import GenerationConfig

    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    pad = eos_token_id[0] if isinstance(eos_token_id, list) else eos_token_id
    GenerationConfig(eos_token_id=eos_token_id, pad_token_id=pad).save_pretrained(path)
    return path


__all__ = ["save_hf_dir", "train_byte_bpe", "train_on_windows"]
