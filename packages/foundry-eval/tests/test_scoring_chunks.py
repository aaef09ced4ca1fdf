"""The shared-prefix path scores choices in length-sorted chunks over one context pass.

Choices of very different lengths are split into several forward calls over copies of the
context's key/value cache; every chunk must give the numbers the plain full-sequence path gives.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from foundry_eval.scoring import ScoreGroup, score_groups
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 97


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval()


def _groups(seed: int, count: int) -> list[ScoreGroup]:
    rng = random.Random(seed)
    groups = []
    for _ in range(count):
        context = [rng.randrange(1, VOCAB) for _ in range(rng.randint(20, 90))]
        # one long choice among short ones: one padded chunk would be mostly padding
        lengths = [rng.randint(1, 4) for _ in range(rng.randint(2, 4))] + [rng.randint(30, 60)]
        rng.shuffle(lengths)
        groups.append(
            ScoreGroup(context, [[rng.randrange(1, VOCAB) for _ in range(n)] for n in lengths])
        )
    return groups


class _CallCounter:
    def __init__(self, model: torch.nn.Module) -> None:
        self.with_cache = 0
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            self.with_cache += 1


def test_chunked_choices_match_full_sequences(llama: LlamaForCausalLM) -> None:
    groups = _groups(0, 12)
    common: dict[str, Any] = {"batch_size": 6, "max_seq_len": 256, "pad_id": 0}
    counter = _CallCounter(llama)
    try:
        shared = score_groups(llama, groups, share_prefix=True, **common)
    finally:
        counter.handle.remove()
    full = score_groups(llama, groups, share_prefix=False, **common)
    # 12 groups in batches of at most 6 contexts: more continuation calls than batches means the
    # choices of a batch were split into chunks.
    assert counter.with_cache > 2
    for got, want in zip(shared, full, strict=True):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert a.num_tokens == b.num_tokens
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert a.greedy == b.greedy


def test_results_follow_input_order(llama: LlamaForCausalLM) -> None:
    groups = _groups(1, 10)
    common: dict[str, Any] = {"batch_size": 4, "max_seq_len": 256, "pad_id": 0}
    forward = score_groups(llama, groups, **common)
    backward = score_groups(llama, groups[::-1], **common)[::-1]
    for got, want in zip(forward, backward, strict=True):
        assert [s.logprob for s in got] == pytest.approx([s.logprob for s in want], abs=1e-4)


def test_host_thread_cap_is_set_for_the_block_and_restored_after_an_error() -> None:
    from foundry_eval.scoring import _host_threads  # pyright: ignore[reportPrivateUsage]

    default = torch.get_num_threads()
    torch.set_num_threads(3)  # not 1, so the cap below is visible on any machine
    try:
        with _host_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
        with pytest.raises(RuntimeError), _host_threads(1):
            raise RuntimeError("scoring failed")
        assert torch.get_num_threads() == 3
        with _host_threads(None):  # CPU scoring keeps every thread
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(default)
