"""The generation loop shared by the CLI, the benchmark and the server's scheduler.

:class:`DecodeBatch` keeps a set of running sequences in one left-padded key/value cache. A new
sequence is prefilled on its own (so padding never enters a prompt's forward pass), its first
token sampled, and its cache joined to the batch; each :meth:`DecodeBatch.step` then runs one
batched forward that advances every running sequence by one token. Finished rows leave the batch
and the padding no row needs any more is trimmed away.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from .engines import Engine
from .errors import FoundryError
from .kv_batch import Past, concat_rows, select_rows, trim_left
from .sampling import SamplingParams, TokenLogprob, adjust_logits, sample_token, token_logprob

__all__ = [
    "DecodeBatch",
    "FinishReason",
    "SequenceState",
    "TextStream",
    "check_fits",
    "generate_tokens",
    "new_decode_batch",
]

FinishReason = Literal["stop", "length", "cancelled"]
_ids = itertools.count()


@dataclass(eq=False)
class SequenceState:
    """One sequence being generated."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    eos_token_ids: frozenset[int] = frozenset()
    generated: list[int] = field(default_factory=list[int])
    finish_reason: FinishReason | None = None
    uid: int = field(default_factory=lambda: next(_ids))
    logprobs: int | None = None  # None: none recorded; k: each token's and the k best tokens'
    prompt_logprobs: bool = False  # also record them for the prompt's tokens (at prefill)

    def __post_init__(self) -> None:
        self.rng = self.sampling.make_rng()
        self.token_logprobs: list[TokenLogprob] = []
        self.prompt_token_logprobs: list[TokenLogprob] = []

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        """Stop this sequence; it leaves its batch at the next step."""
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    def choose(self, logits: np.ndarray) -> int:
        """Sample the next token from this sequence's row of logits and accept it."""
        params = self.sampling
        scores = logits
        if params.adjusts_logits:
            seen = [*self.prompt_ids, *self.generated] if params.repetition_penalty != 1 else []
            scores = adjust_logits(logits, params, seen, self.eos_token_ids, len(self.generated))
        token = sample_token(scores, params, self.rng)
        if self.logprobs is not None:
            self.token_logprobs.append(token_logprob(logits, token, self.logprobs))
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        self.generated.append(token)
        if token in self.eos_token_ids and not self.sampling.ignore_eos:
            self.finish_reason = "stop"
        elif len(self.generated) >= self.max_new_tokens:
            self.finish_reason = "length"


def check_fits(prompt_len: int, max_new_tokens: int, max_positions: int | None) -> None:
    """Refuse a request the model's position table cannot hold."""
    if prompt_len == 0:
        raise FoundryError("the prompt is empty. Give at least one token of prompt.")
    if max_new_tokens < 1:
        raise FoundryError(f"max new tokens must be at least 1, got {max_new_tokens}.")
    if max_positions is not None and prompt_len + max_new_tokens > max_positions:
        raise FoundryError(
            f"prompt ({prompt_len} tokens) plus max new tokens ({max_new_tokens}) exceeds the "
            f"model's {max_positions} positions. Shorten the prompt or ask for fewer tokens."
        )


class DecodeBatch:
    """Running sequences sharing one cache; see the module docstring."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows: list[SequenceState] = []
        self._past: Past | None = None
        self._mask = np.zeros((0, 0), dtype=np.int64)
        self._positions = np.zeros(0, dtype=np.int64)
        self.largest_batch = 0
        self.steps = 0

    def __len__(self) -> int:
        return len(self.rows)

    def prefill(self, seq: SequenceState) -> int:
        """Run ``seq``'s prompt, sample its first token; join the batch unless already done."""
        prompt = np.asarray([seq.prompt_ids], dtype=np.int64)  # (1, T)
        length = prompt.shape[1]
        mask = np.ones((1, length), dtype=np.int64)
        if seq.prompt_logprobs:
            logits, past = self._prefill_scoring(seq)
        else:
            positions = np.arange(length, dtype=np.int64)[None, :]
            logits, past = self.engine.step(prompt, mask, positions, self.engine.empty_past(1))
        token = seq.choose(logits[0])
        if not seq.finished:
            self._join(seq, past, mask, length)
        return token

    def _prefill_scoring(self, seq: SequenceState) -> tuple[np.ndarray, Past]:
        """Prefill one token at a time (the engines return the last position's logits only),
        recording each prompt token's log-probability given the tokens before it."""
        ids = seq.prompt_ids
        top = seq.logprobs or 0
        seq.prompt_token_logprobs = [TokenLogprob(ids[0], None)]
        past = self.engine.empty_past(1)
        logits = np.zeros(0)
        for t in range(len(ids)):
            logits, past = self.engine.step(
                np.asarray([[ids[t]]], dtype=np.int64),
                np.ones((1, t + 1), dtype=np.int64),
                np.asarray([[t]], dtype=np.int64),
                past,
            )
            if t + 1 < len(ids):
                seq.prompt_token_logprobs.append(token_logprob(logits[0], ids[t + 1], top))
        return logits, past

    def _join(self, seq: SequenceState, past: Past, mask: np.ndarray, position: int) -> None:
        if self._past is None or not self.rows:
            self._past, self._mask = past, mask
        else:
            self._past, self._mask = concat_rows([self._past, past], [self._mask, mask])
        self.rows.append(seq)
        self._positions = np.append(self._positions[: len(self.rows) - 1], position)

    def step(self) -> list[tuple[SequenceState, int]]:
        """Advance every running sequence by one token; return (sequence, token) pairs."""
        self._drop_finished()
        if not self.rows:
            return []
        assert self._past is not None
        batch = len(self.rows)
        self.largest_batch = max(self.largest_batch, batch)
        self.steps += 1
        tokens = np.asarray([[seq.generated[-1]] for seq in self.rows], dtype=np.int64)  # (B, 1)
        self._mask = np.concatenate([self._mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        logits, self._past = self.engine.step(
            tokens, self._mask, self._positions[:, None], self._past
        )
        self._positions = self._positions + 1
        events: list[tuple[SequenceState, int]] = []
        for row, seq in enumerate(self.rows):
            if seq.finished:  # cancelled while the step ran
                continue
            token = seq.choose(logits[row])
            events.append((seq, token))
        self._drop_finished()
        return events

    def _drop_finished(self) -> None:
        keep = [i for i, seq in enumerate(self.rows) if not seq.finished]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        self._positions = self._positions[keep]
        if not keep:
            self._past, self._mask = None, np.zeros((0, 0), dtype=np.int64)
            return
        assert self._past is not None
        past, mask = select_rows(self._past, self._mask, keep)
        self._past, self._mask = trim_left(past, mask)


class RunningBatch(Protocol):
    """What the scheduler, ``generate`` and ``bench`` drive: a DecodeBatch or a SlotBatch."""

    rows: list[SequenceState]
    largest_batch: int
    steps: int

    def __len__(self) -> int: ...

    def prefill(self, seq: SequenceState) -> int: ...

    def step(self) -> list[tuple[SequenceState, int]]: ...


def new_decode_batch(engine: Engine) -> RunningBatch:
    """The engine's own batch (a slot cache for the static engine), else a DecodeBatch."""
    factory: Callable[[], RunningBatch] | None = getattr(engine, "new_batch", None)
    return factory() if factory is not None else DecodeBatch(engine)


def generate_tokens(engine: Engine, seq: SequenceState) -> Iterator[int]:
    """Generate one sequence, yielding each token as it is sampled (eos included)."""
    batch = new_decode_batch(engine)
    yield batch.prefill(seq)
    while not seq.finished:
        for _, token in batch.step():
            yield token


def generate_many(engine: Engine, seqs: Iterable[SequenceState]) -> RunningBatch:
    """Generate all ``seqs`` together in one batch (used by the benchmark)."""
    batch = new_decode_batch(engine)
    for seq in seqs:
        batch.prefill(seq)
    while len(batch):
        batch.step()
    return batch


class TextStream:
    """Turns a stream of token ids into a stream of text pieces, honouring stop strings.

    Bytes of a character split across tokens are held back until complete, and so is any tail
    that could be the start of a stop string.
    """

    def __init__(self, tokenizer: Any, stop: Iterable[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self._text = ""  # all decoded text so far
        self._sent = 0  # characters of _text handed out
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; return the text that is now safe to show."""
        if self.stopped:
            return ""
        self._ids.append(token)
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix, len(self._ids))
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """Return whatever is still held back (at the end of generation)."""
        if not self.stopped:
            rest = self._decode(self._prefix, len(self._ids))
            before = self._decode(self._prefix, self._read)
            self._text += rest[len(before) :]
        return self._release(final=True)

    @property
    def text(self) -> str:
        return self._text[: self._sent]

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self._ids[start:end], skip_special_tokens=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        limit = len(self._text)
        for stop in self.stop:
            found = self._text.find(stop, max(0, self._sent - len(stop)))
            if found != -1 and found < limit:
                limit = found
                self.stopped = True
        if not self.stopped and not final:
            limit -= self._stop_prefix_tail()
        piece = self._text[self._sent : limit]
        self._sent = max(self._sent, limit)
        if self.stopped:
            self._text = self._text[:limit]
        return piece

    def _stop_prefix_tail(self) -> int:
        longest = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(self._text)), longest, -1):
                if self._text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
