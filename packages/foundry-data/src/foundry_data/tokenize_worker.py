"""Tokenization of units, in worker processes (or inline when there is one worker).

Imports only numpy, ``tokenizers`` and the standard library so that workers start fast; the
tokenizer arrives as its JSON serialization.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from foundry_data.records import Unit, unit_texts

__all__ = ["TokenizedUnit", "Tokenization", "init_worker", "tokenize_in_worker"]


@dataclass(frozen=True)
class Tokenization:
    """Everything a worker needs to tokenize documents (picklable)."""

    tokenizer_json: str
    text_column: str
    bos_tokens: tuple[int, ...]
    eos_tokens: tuple[int, ...]


@dataclass(frozen=True)
class TokenizedUnit:
    """The documents of one unit, tokenized, separators included, back to back.

    ``doc_lengths[i]`` is the length of document i (with its separators) inside ``tokens``.
    """

    tokens: np.ndarray  # (sum(doc_lengths),) int32
    doc_lengths: np.ndarray  # (num_documents,) int64
    num_bytes: int


class _Tokenizer:
    def __init__(self, spec: Tokenization) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(spec.tokenizer_json)
        self.spec = spec

    def tokenize(self, unit: Unit, num_bytes: int) -> TokenizedUnit:
        texts = unit_texts(unit, self.spec.text_column)
        encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False)
        bos, eos = list(self.spec.bos_tokens), list(self.spec.eos_tokens)
        ids: list[int] = []
        lengths = np.empty(len(texts), dtype=np.int64)
        for i, encoding in enumerate(encodings):
            doc = encoding.ids
            ids += bos
            ids += doc
            ids += eos
            lengths[i] = len(bos) + len(doc) + len(eos)
        return TokenizedUnit(np.array(ids, dtype=np.int32), lengths, num_bytes)


_STATE: dict[str, Any] = {}


def init_worker(spec: Tokenization) -> None:
    """Pool initializer: one tokenizer per process, one thread each (the processes are the
    parallelism)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _STATE["tokenizer"] = _Tokenizer(spec)


def tokenize_in_worker(unit: Unit, num_bytes: int) -> TokenizedUnit:
    tokenizer: _Tokenizer = _STATE["tokenizer"]
    return tokenizer.tokenize(unit, num_bytes)


def make_inline_tokenizer(spec: Tokenization) -> _Tokenizer:
    """A tokenizer for the main process (a single worker: no pool)."""
    return _Tokenizer(spec)
