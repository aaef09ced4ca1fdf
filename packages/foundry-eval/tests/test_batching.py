"""Padding-aware batch plans: exact optimum, constraints respected, order kept."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from foundry_eval.batching import call_overhead_tokens, plan_batches


def _cost(widths: list[int], batches: list[range], overhead: int) -> int:
    return sum(len(b) * widths[b.start] + overhead for b in batches)


def _allowed(b: range, widths, tails, max_width, max_rows) -> bool:
    if len(b) > max_rows:
        return False
    if tails is None:
        return True
    return widths[b.start] + max(tails[k] for k in b) <= max_width


def _brute_force(widths, max_rows, overhead, tails=None, max_width=None) -> int:
    n = len(widths)
    best = None
    for cuts in itertools.product([False, True], repeat=n - 1):
        starts = [0] + [k + 1 for k, c in enumerate(cuts) if c]
        batches = [range(a, b) for a, b in itertools.pairwise([*starts, n])]
        if all(_allowed(b, widths, tails, max_width, max_rows) for b in batches):
            cost = _cost(widths, batches, overhead)
            best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(40))
def test_plan_is_optimal_and_covers_every_item_in_order(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 9)
    widths = sorted((rng.randint(1, 60) for _ in range(n)), reverse=True)
    max_rows = rng.randint(1, 5)
    overhead = rng.choice([0, 5, 40, 500])
    tails = max_width = None
    if seed % 2:
        tails = [rng.randint(0, 20) for _ in range(n)]
        max_width = max(w + t for w, t in zip(widths, tails, strict=True)) + rng.randint(0, 10)
    plan = plan_batches(widths, max_rows, overhead, tails=tails, max_width=max_width)
    assert [k for b in plan for k in b] == list(range(n))
    assert all(_allowed(b, widths, tails, max_width, max_rows) for b in plan)
    assert _cost(widths, plan, overhead) == _brute_force(
        widths, max_rows, overhead, tails, max_width
    )


def test_overhead_trades_padding_against_calls() -> None:
    widths = [100, 100, 10, 10]
    # Cheap calls: split the short rows off. Dear calls: one batch, padding and all.
    assert plan_batches(widths, 4, 10) == [range(0, 2), range(2, 4)]
    assert plan_batches(widths, 4, 1000) == [range(0, 4)]
    assert plan_batches(widths, 1, 1000) == [range(k, k + 1) for k in range(4)]
    assert plan_batches([], 4, 10) == []


def test_device_overheads_prefer_full_batches_on_accelerators() -> None:
    cpu = call_overhead_tokens(torch.device("cpu"))
    gpu = call_overhead_tokens(torch.device("cuda"))
    assert 0 < cpu < gpu
    widths = [64] * 8 + [16] * 8
    assert len(plan_batches(widths, 16, cpu)) == 2
    assert len(plan_batches(widths, 16, gpu)) == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="sorted widest first"):
        plan_batches([1, 2], 4, 0)
    with pytest.raises(ValueError, match="max_rows"):
        plan_batches([2, 1], 0, 0)
