"""Tokenization of units, in worker processes (or inline when there is one worker).

Imports only ``tokenizers`` and the standard library (not even numpy: token ids travel as stdlib
arrays, which the main process views as numpy arrays without a copy) so that workers start
fast; the tokenizer arrives as its JSON serialization.
"""

from __future__ import annotations

import os
import pickle
from array import array
from dataclasses import dataclass
from typing import Any

from foundry_data.records import Unit, unit_texts

__all__ = [
    "TokenizedUnit",
    "Tokenization",
    "init_worker",
    "make_inline_tokenizer",
    "tokenize_in_worker",
]


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

    ``tokens`` holds int32 ids (typecode ``i``), ``doc_lengths[i]`` the length of document i
    (with its separators) inside ``tokens`` (typecode ``q``).
    """

    tokens: array[int]
    doc_lengths: array[int]
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
        lengths = array("q")
        for encoding in encodings:
            doc = encoding.ids
            ids += bos
            ids += doc
            ids += eos
            lengths.append(len(bos) + len(doc) + len(eos))
        return TokenizedUnit(array("i", ids), lengths, num_bytes)


_STATE: dict[str, Any] = {}


def init_worker(spec_file: str) -> None:
    """Pool initializer: one tokenizer per process, one thread each (the processes are the
    parallelism).

    The :class:`Tokenization` comes pickled in a file, not as an argument: a spawned process gets
    its arguments through a pipe, and a large one (a tokenizer's JSON is megabytes) would keep the
    parent waiting until the child has started and read it, so workers would start one by one.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with open(spec_file, "rb") as f:
        spec = pickle.load(f)
    if not isinstance(spec, Tokenization):
        raise TypeError(f"{spec_file} holds a {type(spec).__name__}, not a Tokenization")
    _STATE["tokenizer"] = _Tokenizer(spec)


def tokenize_in_worker(unit: Unit, num_bytes: int) -> TokenizedUnit:
    tokenizer: _Tokenizer = _STATE["tokenizer"]
    return tokenizer.tokenize(unit, num_bytes)


def make_inline_tokenizer(spec: Tokenization) -> _Tokenizer:
    """A tokenizer for the main process (a single worker: no pool)."""
    return _Tokenizer(spec)
