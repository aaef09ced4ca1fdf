"""Tokenization of units, in worker processes (or inline when there is one worker).

Imports only ``tokenizers`` and the standard library (not even numpy: token ids travel as stdlib
arrays, which the main process views as numpy arrays without a copy) so that workers start
fast; the tokenizer arrives as its JSON serialization. Very long documents are encoded in pieces
cut where the tokenizer splits anyway (``long_documents``), so memory stays bounded.
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from foundry_data.long_documents import PIECE_CHARS, pieces, splits_exactly
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


BATCH_CHARS = 4 << 20
"""Characters encoded in one ``encode_batch`` call at most (one piece may exceed it): the Rust
encodings of a batch are held together, about a hundred bytes per token."""


class _Tokenizer:
    def __init__(self, spec: Tokenization) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(spec.tokenizer_json)
        self.spec = spec
        self.splits = splits_exactly(spec.tokenizer_json)

    def tokenize(self, unit: Unit, num_bytes: int) -> TokenizedUnit:
        texts = unit_texts(unit, self.spec.text_column)
        bos, eos = self.spec.bos_tokens, self.spec.eos_tokens
        ids = array("i")
        lengths = array("q")
        current, start = -1, 0
        for doc, piece_ids in self._encode(self._pieces(texts)):
            if doc != current:
                if current >= 0:
                    ids.extend(eos)
                    lengths.append(len(ids) - start)
                current, start = doc, len(ids)
                ids.extend(bos)
            ids.extend(piece_ids)
        if current >= 0:
            ids.extend(eos)
            lengths.append(len(ids) - start)
        return TokenizedUnit(ids, lengths, num_bytes)

    def _pieces(self, texts: list[str]) -> Iterator[tuple[int, str]]:
        """(document index, text) of every document, long ones in pieces (at least one each)."""
        for doc, text in enumerate(texts):
            if self.splits and len(text) > PIECE_CHARS:
                for piece in pieces(text, PIECE_CHARS):
                    yield doc, piece
            else:
                yield doc, text

    def _encode(self, items: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[int]]]:
        """(document index, ids) of each piece, encoded in batches of at most BATCH_CHARS
        characters (one piece may exceed it); pieces are cut only as they are reached."""
        docs: list[int] = []
        batch: list[str] = []
        chars = 0
        for doc, text in itertools.chain(items, [(-1, "")]):
            if batch and (doc < 0 or chars + len(text) > BATCH_CHARS):
                encodings = self.backend.encode_batch_fast(batch, add_special_tokens=False)
                batch, chars = [], 0
                yield from zip(docs, (encoding.ids for encoding in encodings), strict=True)
                docs, encodings = [], None
            if doc >= 0:
                docs.append(doc)
                batch.append(text)
                chars += len(text)


_STATE: dict[str, Any] = {}


def init_worker(spec_file: str) -> None:
    """Pool initializer: one tokenizer per process, one thread each (the processes are the
    parallelism).

    The :class:`Tokenization` comes pickled in a file, not as an argument: a spawned process gets
    its arguments through a pipe, and a large one (a tokenizer's JSON is megabytes) would keep the
    parent waiting until the child has started and read it, so workers would start one by one.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # Ctrl-C reaches the whole process group; only the parent handles it (and stops the pool).
    # A worker interrupted mid-send left half a result in the pipe, and the pool's result thread
    # then waited for the rest forever.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
