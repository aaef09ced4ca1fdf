"""Driving a decode batch with sequences that join at given steps (foundry-infer's tests)."""

from __future__ import annotations

from typing import Any


def run_joining(batch: Any, seqs: list[Any], joins: dict[int, list[int]], steps: int) -> list:
    """Before each of ``steps`` decode steps prefill ``seqs[i]`` for each i in ``joins[step]``;
    every sequence's tokens (first token included), in ``seqs`` order."""
    got: dict[int, list[int]] = {s.uid: [] for s in seqs}
    for step in range(steps):
        for i in joins.get(step, []):
            got[seqs[i].uid].append(batch.prefill(seqs[i]))
        for seq, token in batch.step():
            got[seq.uid].append(token)
    return [got[s.uid] for s in seqs]
