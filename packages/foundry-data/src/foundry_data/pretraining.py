"""``foundry-data convert``: documents -> token stream -> fixed-length MDS samples.

The main process reads the source in blocks and hands them to worker processes, which parse,
tokenize and add separators; results come back in input order (at most a few blocks in flight, so
memory stays flat however large the input). The main process cuts the token stream into samples
of exactly ``seq_len`` tokens and writes them. Since the stream does not depend on how the work
was split, any ``--workers`` gives byte-identical shards.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np

from foundry_data import PRETRAINING_COLUMNS
from foundry_data.backend_tokenizer import BackendTokenizer, load_backend_tokenizer
from foundry_data.conversion_run import ConversionRun
from foundry_data.errors import FoundryError
from foundry_data.manifest import DatasetManifest, SeparatorInfo
from foundry_data.mds_options import DEFAULT_HASHES
from foundry_data.records import Unit
from foundry_data.resume import TOKENIZER_SUFFIXES, hash_files
from foundry_data.tokenize_worker import (
    Tokenization,
    TokenizedUnit,
    init_worker,
    make_inline_tokenizer,
    tokenize_in_worker,
)

__all__ = ["ConversionReport", "PretrainingOptions", "convert_pretraining"]

IN_FLIGHT_PER_WORKER = 3


@dataclass(frozen=True)
class PretrainingOptions:
    source: str
    out: str
    tokenizer: str
    seq_len: int
    text_column: str = "text"
    bos_text: str = ""
    eos_text: str | None = None  # None: the tokenizer's EOS token
    wrap: bool = True
    compression: str | None = "zstd"
    hashes: list[str] = field(default_factory=lambda: list(DEFAULT_HASHES))
    workers: int = 0  # 0: all cores
    shard_size: int = 1 << 26
    overwrite: bool = False
    local: str | None = None
    reader: Literal["auto", "datasets"] = "auto"
    subset: str | None = None
    split: str = "train"
    txt_unit: Literal["file", "line"] = "file"
    progress: bool = True
    resume: bool = True  # continue a killed identical run's work folder, if there is one


@dataclass(frozen=True)
class ConversionReport:
    out: str
    manifest: DatasetManifest
    num_bytes: int
    seconds: float
    resumed_shards: int = 0
    """Shards a killed run had finished before this one resumed it (0: not resumed)."""
    resumed_tokens: int = 0
    """Tokens (and below, input bytes) this run did not read again because the killed run had."""
    resumed_bytes: int = 0

    @classmethod
    def of_run(cls, run: ConversionRun, out: str, manifest: DatasetManifest) -> Self:
        """The report of a finished ``run`` (its sizes and time from the progress counters)."""
        progress = run.progress
        return cls(
            out=out,
            manifest=manifest,
            num_bytes=progress.bytes,
            seconds=progress.seconds,
            resumed_shards=len(run.resumed.shards) if run.resumed else 0,
            resumed_tokens=progress.resumed_tokens,
            resumed_bytes=progress.resumed_bytes,
        )

    def summary(self) -> str:
        from foundry_data.progress import human_bytes, human_count

        m = self.manifest
        secs = max(self.seconds, 1e-9)
        return (
            f"converted {m.num_documents:,} documents ({human_bytes(self.num_bytes)}) into "
            f"{m.num_samples:,} samples of {m.seq_len} tokens ({human_count(m.num_tokens)} "
            f"tokens, {human_count(m.num_dropped_tokens)} left over) in {self.seconds:.1f} s"
            f"{self.resumed_note()}: {human_count(self.tokens_per_second())} tokens/s, "
            f"{human_bytes((self.num_bytes - self.resumed_bytes) / secs)}/s -> {self.out}"
        )

    def tokens_per_second(self) -> float:
        """Tokens this run converted (the resumed part not counted) per second."""
        return (self.manifest.num_tokens - self.resumed_tokens) / max(self.seconds, 1e-9)

    def resumed_note(self) -> str:
        if not self.resumed_shards:
            return ""
        return f" (resumed after the {self.resumed_shards:,} shards of the killed run)"


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _separators(tok: BackendTokenizer, bos_text: str, eos_text: str | None) -> SeparatorInfo:
    if eos_text is None:
        eos_text = tok.eos_token or ""
    if not bos_text and not eos_text:
        raise FoundryError(
            f"tokenizer {tok.name!r} has no EOS token, so documents would run together with "
            "nothing between them. Pass --eos-text TEXT (e.g. '<|endoftext|>') or --bos-text TEXT."
        )
    return SeparatorInfo(
        bos_text=bos_text,
        eos_text=eos_text,
        bos_tokens=tok.encode_plain(bos_text) if bos_text else [],
        eos_tokens=tok.encode_plain(eos_text) if eos_text else [],
        wrap=True,
    )


def tokenized_units(
    units: Iterable[tuple[Unit, int]], spec: Tokenization, workers: int
) -> Iterator[TokenizedUnit]:
    """Tokenize ``units`` with ``workers`` processes; results in input order."""
    if workers <= 1:
        inline = make_inline_tokenizer(spec)
        for unit, num_bytes in units:
            yield inline.tokenize(unit, num_bytes)
        return
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="foundry-data-") as tmp:
        spec_file = os.path.join(tmp, "tokenization.pickle")
        with open(spec_file, "wb") as f:
            pickle.dump(spec, f)
        with context.Pool(workers, initializer=init_worker, initargs=(spec_file,)) as pool:
            pending: deque[AsyncResult[TokenizedUnit]] = deque()
            for unit, num_bytes in units:
                pending.append(pool.apply_async(tokenize_in_worker, (unit, num_bytes)))
                if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()


@dataclass(frozen=True)
class PackerSnapshot:
    """A :class:`SamplePacker`'s carry-over at the start of a unit, with the samples written."""

    carry: np.ndarray
    parts: tuple[np.ndarray, ...]
    dropped: int
    samples: int

    def to_json(self) -> dict[str, Any]:
        parts = np.concatenate(self.parts) if self.parts else np.empty(0, dtype=np.int32)
        return {
            "carry": self.carry.tolist(),
            "parts": parts.tolist(),  # only their concatenation matters
            "dropped": self.dropped,
            "samples": self.samples,
        }


class SamplePacker:
    """Cuts a stream of tokenized documents into samples of exactly ``seq_len`` tokens.

    ``wrap=True``: the stream is cut every ``seq_len`` tokens, documents cross sample boundaries.
    ``wrap=False``: documents are gathered until they fill a sample, which is then cut and the
    rest of the last document dropped, so every sample starts at a document start
    (llm-foundry's ``--no_wrap``). The tail shorter than ``seq_len`` is dropped either way.
    """

    def __init__(self, seq_len: int, wrap: bool) -> None:
        self.seq_len = seq_len
        self.wrap = wrap
        self.dropped = 0
        self._carry = np.empty(0, dtype=np.int32)
        self._parts: list[np.ndarray] = []
        self._parts_len = 0

    def snapshot(self, samples: int) -> PackerSnapshot:
        """The packer's state now (no copy: its arrays are never changed in place)."""
        return PackerSnapshot(self._carry, tuple(self._parts), self.dropped, samples)

    def restore(self, state: dict[str, Any]) -> int:
        """Go back to a :meth:`PackerSnapshot.to_json` state; returns its sample count."""
        self._carry = np.array(state["carry"], dtype=np.int32)
        parts = np.array(state["parts"], dtype=np.int32)
        self._parts = [parts] if parts.size else []
        self._parts_len = int(parts.size)
        self.dropped = int(state["dropped"])
        return int(state["samples"])

    def add(self, unit: TokenizedUnit) -> Iterator[np.ndarray]:
        if unit.tokens.itemsize != 4:
            raise RuntimeError(f"C int is {unit.tokens.itemsize} bytes here; token ids need 4")
        tokens = np.frombuffer(unit.tokens, dtype=np.int32)  # a view, no copy
        if self.wrap:
            yield from self._add_wrapped(tokens)
        else:
            yield from self._add_unwrapped(tokens, unit.doc_lengths)

    def _add_wrapped(self, tokens: np.ndarray) -> Iterator[np.ndarray]:
        stream = np.concatenate([self._carry, tokens]) if self._carry.size else tokens
        full = stream.shape[0] // self.seq_len
        for i in range(full):
            yield stream[i * self.seq_len : (i + 1) * self.seq_len]
        self._carry = stream[full * self.seq_len :].copy()

    def _add_unwrapped(
        self, tokens: np.ndarray, doc_lengths: Iterable[int]
    ) -> Iterator[np.ndarray]:
        start = 0
        for length in doc_lengths:
            self._parts.append(tokens[start : start + length])
            self._parts_len += length
            start += length
            if self._parts_len >= self.seq_len:
                sample = np.concatenate(self._parts)
                self.dropped += self._parts_len - self.seq_len
                self._parts, self._parts_len = [], 0
                yield sample[: self.seq_len]

    def finish(self) -> int:
        """Tokens left over (dropped) at the end; returns the total dropped."""
        self.dropped += self._carry.shape[0] + self._parts_len
        self._carry = np.empty(0, dtype=np.int32)
        self._parts, self._parts_len = [], 0
        return self.dropped


def convert_pretraining(options: PretrainingOptions) -> ConversionReport:
    """Run a pretraining conversion. Raises FoundryError on bad input."""
    from foundry_data import __version__

    if options.seq_len < 1:
        raise FoundryError(
            f"--concat-tokens must be a positive number of tokens, not {options.seq_len}."
        )
    with ConversionRun(options, desc="convert") as run:
        tok = load_backend_tokenizer(options.tokenizer)
        separator = _separators(tok, options.bos_text, options.eos_text).model_copy(
            update={"wrap": options.wrap}
        )
        spec = Tokenization(
            tokenizer_json=tok.backend_json,
            text_column=options.text_column,
            bos_tokens=tuple(separator.bos_tokens),
            eos_tokens=tuple(separator.eos_tokens),
        )
        workers = options.workers or default_workers()
        identity = _tokenizer_identity(options.tokenizer, tok, separator)
        writer, progress = run.start(PRETRAINING_COLUMNS, identity=identity)
        packer = SamplePacker(options.seq_len, options.wrap)
        num_samples = 0
        if run.resumed_state is not None:
            num_samples = packer.restore(run.resumed_state)
        units = run.units(text_column=options.text_column, txt_unit=options.txt_unit)
        for chunk in tokenized_units(units, spec, workers):
            run.unit_started(packer.snapshot(num_samples))
            for sample in packer.add(chunk):
                writer.write({"tokens": sample})
                num_samples += 1
            progress.update(
                documents=len(chunk.doc_lengths),
                tokens=len(chunk.tokens),
                num_bytes=chunk.num_bytes,
            )
        dropped = packer.finish()
        _check_counts(options, progress.documents, progress.tokens, num_samples)
        manifest = DatasetManifest(
            kind="pretraining",
            tokenizer=tok.name,
            vocab_size=tok.vocab_size,
            seq_len=options.seq_len,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
            pad_token_id=tok.pad_token_id,
            separator=separator,
            source=run.source_info(options.text_column),
            num_samples=num_samples,
            num_tokens=num_samples * options.seq_len,
            num_documents=progress.documents,
            num_dropped_tokens=dropped,
            columns=PRETRAINING_COLUMNS,
            compression=options.compression,
            hashes=options.hashes,
            foundry_data_version=__version__,
        )
        writer.finish(lambda: manifest)
    return ConversionReport.of_run(run, options.out, manifest)


def _check_counts(
    options: PretrainingOptions, documents: int, tokens: int, num_samples: int
) -> None:
    """A source with no document, or too few tokens for one sample, is a user error."""
    if documents == 0:
        raise FoundryError(f"source {options.source!r} holds no documents.")
    if num_samples == 0:
        raise FoundryError(
            f"source {options.source!r} gives only {tokens:,} tokens, fewer than one "
            f"sample of --concat-tokens {options.seq_len}. Use a smaller --concat-tokens or "
            "more text."
        )


def _tokenizer_identity(
    spec: str, tok: BackendTokenizer, separator: SeparatorInfo
) -> dict[str, Any]:
    """What of the tokenizer decides the output: its files, what it loaded as, the separators."""
    return {
        "tokenizer": {
            "files": hash_files(Path(spec).expanduser(), TOKENIZER_SUFFIXES),
            "backend": hashlib.sha256(tok.backend_json.encode("utf-8")).hexdigest(),
            "name": tok.name,
            "ids": [tok.vocab_size, tok.eos_token_id, tok.bos_token_id, tok.pad_token_id],
        },
        "separator": separator.model_dump(mode="json"),
    }
