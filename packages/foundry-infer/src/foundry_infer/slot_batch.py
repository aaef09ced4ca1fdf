"""Running sequences on a :class:`~foundry_infer.slot_engine.SlotEngine`'s slot cache.

The same interface as :class:`~foundry_infer.generation.DecodeBatch` (``prefill``, ``step``,
``rows``), so the scheduler, the benchmark and ``generate`` drive either. Row ``i`` lives in slot
``i``: a sequence joins in the first free slot after its prompt is prefilled, and when one
finishes the last row moves into its slot, so the running rows stay in slots ``0 .. n-1``.
Logits come back from the engine per step; a step whose rows all decode greedily with no logit
adjustment and no logprobs takes the argmax on the device (only token ids cross to the host),
any other step samples each row on the host exactly as :class:`DecodeBatch` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from .errors import FoundryError
from .generation import SequenceState
from .sampling import TokenLogprob, token_logprob

if TYPE_CHECKING:
    from .slot_engine import SlotEngine

__all__ = ["PREFILL_TOKENS", "SlotBatch"]

# prefill_many runs prompts together while (prompts x longest prompt) stays within this many
# token positions, which bounds the forward's activations and its (B, H, T, T) mask.
PREFILL_TOKENS = 4096


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


class SlotBatch:
    """Sequences sharing a slot cache; see the module docstring."""

    def __init__(self, engine: SlotEngine) -> None:
        self.engine = engine
        self.rows: list[SequenceState] = []
        self._positions: list[int] = []  # where each row's next input token goes
        self.largest_batch = 0
        self.steps = 0

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
        """Advance every running sequence by one token; return (sequence, token) pairs."""
        self._drop_finished()
        if not self.rows:
            return []
        self.largest_batch = max(self.largest_batch, len(self.rows))
        self.steps += 1
        tokens = [seq.generated[-1] for seq in self.rows]
        logits = self.engine.decode(tokens, self._positions)
        self._positions = [p + 1 for p in self._positions]
        events: list[tuple[SequenceState, int]] = []
        if all(_plain_greedy(seq) for seq in self.rows):
            chosen: list[int] = logits.argmax(dim=-1).tolist()
            for seq, token in zip(self.rows, chosen, strict=True):
                if not seq.finished:  # cancelled while the step ran
                    seq.accept(token)
                    events.append((seq, token))
        else:
            host: np.ndarray = logits.cpu().numpy()
            for row, seq in enumerate(self.rows):
                if not seq.finished:
                    events.append((seq, seq.choose(host[row])))
        self._drop_finished()
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
