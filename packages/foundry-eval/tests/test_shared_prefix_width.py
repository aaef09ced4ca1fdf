"""Shared-prefix batches never exceed the model's length, even when each example fits alone.

transformers' MPT refuses inputs longer than its max_seq_len; a batch that pads a long context
and a long choice from different examples used to cross that limit (found by pipeline.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from foundry_eval.scoring import ScoreGroup, score_groups
from transformers import MptConfig, MptForCausalLM

MAX_LEN = 16


@pytest.fixture(scope="module")
def mpt() -> MptForCausalLM:
    torch.manual_seed(0)
    cfg = MptConfig(d_model=32, n_heads=2, n_layers=2, max_seq_len=MAX_LEN, vocab_size=50)
    return MptForCausalLM(cfg).eval()


def test_each_example_fits_but_their_padded_batch_would_not(mpt: MptForCausalLM) -> None:
    long_context = ScoreGroup(context=list(range(1, 16)), continuations=[[3], [4, 5]])
    long_choice = ScoreGroup(context=list(range(1, 10)), continuations=[[6, 6, 6], [7]])
    groups = [long_context, long_choice]
    for grp in groups:  # each fits the model on its own
        assert len(grp.context) + max(map(len, grp.continuations)) - 1 <= MAX_LEN
    # padded together: the long context followed by the long choice (minus its first token)
    assert len(long_context.context) + 3 - 1 > MAX_LEN
    cached_calls = 0

    def count(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        nonlocal cached_calls
        cached_calls += kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None

    common: dict[str, Any] = {"batch_size": 8, "max_seq_len": MAX_LEN, "pad_id": 0}
    handle = mpt.register_forward_pre_hook(count, with_kwargs=True)
    try:
        shared = score_groups(mpt, groups, share_prefix=True, **common)
    finally:
        handle.remove()
    assert cached_calls == 2  # both groups took the shared path, in two batches
    full = score_groups(mpt, groups, share_prefix=False, **common)
    for got, want in zip(shared, full, strict=True):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
