"""Running sequences on a :class:`~foundry_infer.slot_engine.SlotEngine`'s slot cache.

The same interface as :class:`~foundry_infer.generation.DecodeBatch` (``prefill``, ``step``,
``rows``), so the scheduler, the benchmark and ``generate`` drive either. Row ``i`` lives in slot
``i``: a sequence joins in the first free slot after its prompt is prefilled, and when one
finishes the last row moves into its slot, so the running rows stay in slots ``0 .. n-1``.
Logits come back from the engine per step; a step whose rows all decode greedily with no logit
adjustment and no logprobs takes the argmax on the device (only token ids cross to the host),
any other step samples each row on the host exactly as :class:`DecodeBatch` does.

With ``overlap`` (on by default for an engine on CUDA, off on CPU, where the host runs each step
itself; ``FOUNDRY_DECODE_OVERLAP=1`` or ``0`` decides instead, see :func:`overlap_wanted`)
greedy steps run one ahead: while the host reads a step's tokens, the next step is already
queued, its input tokens taken on the device from the step before
(:meth:`SlotEngine.launch_greedy`), so the GPU does not wait for the host between steps. A step
is queued ahead only while the rows stay the same, all plain greedy, none finished and each with
a token to spare; a row that ends by eos or a stop string meanwhile drops the extra token its
row computed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import FoundryError
from .generation import SequenceState
from .sampling import TokenLogprob, token_logprob

if TYPE_CHECKING:
    from .slot_engine import Launched, SlotEngine

__all__ = ["PREFILL_TOKENS", "SlotBatch", "overlap_wanted"]

OVERLAP_VARIABLE = "FOUNDRY_DECODE_OVERLAP"
# prefill_many runs prompts together while (prompts x longest prompt) stays within this many
# token positions, which bounds the forward's activations and its (B, H, T, T) mask.
PREFILL_TOKENS = 4096


def overlap_wanted(device_type: str) -> bool:
    """Whether greedy steps run one ahead: ``FOUNDRY_DECODE_OVERLAP`` 1 or 0, else (unset or
    ``auto``) on CUDA only. On one H100 it took MPT-1B batch-1 decode from 484 to 521 tokens/s,
    551 to 571 with ``--compile-decode`` (benchmarks/infer_gpu.py, 2026-12-05)."""
    value = os.environ.get(OVERLAP_VARIABLE, "auto").strip().lower()
    if value in ("", "auto"):
        return device_type == "cuda"
    if value in ("0", "1"):
        return value == "1"
    raise FoundryError(
        f"{OVERLAP_VARIABLE}={value!r} is not a setting. Use 1 (queue each greedy decode step "
        "before the host has read the one before), 0 (one step at a time) or auto (the default: "
        "1 for an engine on CUDA, 0 on CPU)."
    )


def _plain_greedy(seq: SequenceState) -> bool:
    return seq.sampling.greedy and not seq.sampling.adjusts_logits and seq.logprobs is None


def _forward_groups(seqs: list[SequenceState]) -> Iterator[list[SequenceState]]:
    """Consecutive runs of ``seqs`` that one prefill forward takes: (run length x longest
    prompt) within :data:`PREFILL_TOKENS`; a sequence asking for prompt logprobs alone."""
    group: list[SequenceState] = []
    for seq in seqs:
        longest = max(len(s.prompt_ids) for s in [*group, seq])
        if group and (seq.prompt_logprobs or (len(group) + 1) * longest > PREFILL_TOKENS):
            yield group
            group = []
        group.append(seq)
        if seq.prompt_logprobs:
            yield group
            group = []
    if group:
        yield group


@dataclass
class Ahead:
    """A greedy step in flight and the rows it runs (row i in slot i at its launch)."""

    rows: list[SequenceState]
    launched: Launched


class SlotBatch:
    """Sequences sharing a slot cache; see the module docstring."""

    def __init__(self, engine: SlotEngine) -> None:
        self.engine = engine
        self.rows: list[SequenceState] = []
        self._positions: list[int] = []  # where each row's next input token goes
        self.largest_batch = 0
        self.steps = 0
        self._ahead: Ahead | None = None  # a greedy step queued and not yet read
        # all-greedy steps run one ahead (see step())
        self.overlap = overlap_wanted(engine.device.type)

    def __len__(self) -> int:
        return len(self.rows)

    def prefill(self, seq: SequenceState) -> int:
        """Run ``seq``'s prompt into a free slot, sample its first token; keep it unless done."""
        self._drop_finished()
        self._check_room(seq, 1)
        length = len(seq.prompt_ids)
        slot = len(self.rows)
        logits = self.engine.prefill(slot, seq.prompt_ids, all_logits=seq.prompt_logprobs)
        host = logits[0].cpu().numpy()
        if seq.prompt_logprobs:
            top = seq.logprobs or 0
            ids = seq.prompt_ids
            seq.prompt_token_logprobs = [TokenLogprob(ids[0], None)] + [
                token_logprob(host[t], ids[t + 1], top) for t in range(length - 1)
            ]
            host = host[-1]
        token = self._join(seq, host)
        self._drop_finished()
        return token

    def prefill_many(self, seqs: list[SequenceState]) -> list[int]:
        """Prefill ``seqs`` (in order) with as few forwards as :data:`PREFILL_TOKENS` allows;
        each one's first token. Sequences asking for prompt logprobs are prefilled alone."""
        self._drop_finished()
        for joining, seq in enumerate(seqs, start=1):  # refuse before anything runs
            self._check_room(seq, joining)
        firsts: dict[int, int] = {}
        for group in _forward_groups(seqs):
            firsts.update(self._prefill_group(group))
        return [firsts[seq.uid] for seq in seqs]

    def _prefill_group(self, group: list[SequenceState]) -> dict[int, int]:
        if len(group) == 1:
            return {group[0].uid: self.prefill(group[0])}
        logits = self.engine.prefill_many(len(self.rows), [s.prompt_ids for s in group])
        host = logits.cpu().numpy()
        firsts = {seq.uid: self._join(seq, host[i]) for i, seq in enumerate(group)}
        self._drop_finished()  # rows done at their first token leave (their slots refill)
        return firsts

    def _join(self, seq: SequenceState, logits: np.ndarray) -> int:
        """Sample the first token and take the next slot (finished rows leave afterwards)."""
        token = seq.choose(logits)
        self.rows.append(seq)
        self._positions.append(len(seq.prompt_ids))
        return token

    def _check_room(self, seq: SequenceState, joining: int) -> None:
        """Refuse ``seq`` (the ``joining``-th newcomer) when slots or positions run out."""
        engine = self.engine
        if len(self.rows) + joining > engine.max_batch_size:
            raise FoundryError(
                f"all {engine.max_batch_size} cache slots are in use; wait for a sequence to "
                "finish or raise --max-batch-size."
            )
        length = len(seq.prompt_ids)
        if length == 0 or length + seq.max_new_tokens > engine.max_len:
            raise FoundryError(
                f"prompt ({length} tokens) plus max new tokens ({seq.max_new_tokens}) must be "
                f"between 1 and the slot cache's {engine.max_len} positions. Shorten the prompt, "
                "ask for fewer tokens or raise --max-model-len."
            )

    def step(self) -> list[tuple[SequenceState, int]]:
        """Advance the running sequences by one token; return (sequence, token) pairs.

        With ``overlap``, all-greedy steps run one ahead (see :meth:`_step_ahead`): a call may
        return the tokens of a step launched by the call before, with the next one queued."""
        if self._ahead is not None:
            return self._step_ahead()
        self._drop_finished()
        if not self.rows:
            return []
        if self.overlap and all(_plain_greedy(seq) for seq in self.rows):
            self._ahead = self._launch(None)
            return self._step_ahead()
        self._count_step()
        tokens = [seq.generated[-1] for seq in self.rows]
        logits = self.engine.decode(tokens, self._positions)
        self._positions = [p + 1 for p in self._positions]
        events: list[tuple[SequenceState, int]] = []
        if all(_plain_greedy(seq) for seq in self.rows):
            chosen: list[int] = logits.argmax(dim=-1).tolist()
            events = self._accept(self.rows, chosen)
        else:
            host: np.ndarray = logits.cpu().numpy()
            for row, seq in enumerate(self.rows):
                if not seq.finished:
                    events.append((seq, seq.choose(host[row])))
        self._drop_finished()
        return events

    def _count_step(self) -> None:
        self.largest_batch = max(self.largest_batch, len(self.rows))
        self.steps += 1

    def _launch(self, after: Ahead | None) -> Ahead:
        """Queue a greedy step for the running rows: from their last tokens on the host, or
        chained on ``after``'s device tokens."""
        self._count_step()
        tokens = None if after is not None else [seq.generated[-1] for seq in self.rows]
        launched = self.engine.launch_greedy(
            self._positions, tokens, after.launched if after is not None else None
        )
        self._positions = [p + 1 for p in self._positions]
        return Ahead(list(self.rows), launched)

    def _chainable(self, ahead: Ahead) -> bool:
        """Whether the step after ``ahead`` can be queued before ``ahead``'s tokens are read:
        the same rows in the same slots, all still plain greedy, none finished, and each with
        a token to spare after ``ahead``'s (a row ending at ``ahead`` by its token limit would
        run past its positions; one ending by eos or a stop string only wastes its row)."""
        return len(self.rows) == len(ahead.rows) and all(
            seq is was
            and not seq.finished
            and _plain_greedy(seq)
            and len(seq.generated) + 2 <= seq.max_new_tokens
            for seq, was in zip(self.rows, ahead.rows, strict=True)
        )

    def _step_ahead(self) -> list[tuple[SequenceState, int]]:
        """Queue the next step behind the one in flight where :meth:`_chainable`, then read the
        one in flight; its tokens go to the rows it ran (a row finished meanwhile skips its)."""
        ahead, self._ahead = self._ahead, None
        assert ahead is not None
        if self._chainable(ahead):
            self._ahead = self._launch(ahead)
        events = self._accept(ahead.rows, ahead.launched.tokens())
        if self._ahead is None:
            self._drop_finished()
        return events

    @staticmethod
    def _accept(rows: list[SequenceState], tokens: list[int]) -> list[tuple[SequenceState, int]]:
        events = []
        for seq, token in zip(rows, tokens, strict=True):
            if not seq.finished:  # cancelled, or stopped, while the step ran
                seq.accept(token)
                events.append((seq, token))
        return events

    def _drop_finished(self) -> None:
        """Free finished rows' slots, moving the last row into each freed slot."""
        i = 0
        while i < len(self.rows):
            if not self.rows[i].finished:
                i += 1
                continue
            last = len(self.rows) - 1
            if i != last:
                self.engine.move_slot(last, i, self._positions[last])
                self.rows[i], self._positions[i] = self.rows[last], self._positions[last]
            self.rows.pop()
            self._positions.pop()
