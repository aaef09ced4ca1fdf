"""Sampled generation (code tasks): each sample's draw is keyed by the seed, the example and the
sample number, so batch size, batch membership and GPU count do not change it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from foundry_eval.generation import (
    _hash32,
    _hash32_t,
    _KeyedSampler,
    generate_texts,
    sample_keys,
)
from foundry_eval.prompts import GenerationRequest


def test_tensor_hash_matches_the_integer_hash() -> None:
    values = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, *range(1000, 1100)]
    values += np.random.default_rng(0).integers(0, 2**32, 500).tolist()
    got = _hash32_t(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [_hash32(v) for v in values]
    assert all(0 <= g < 2**32 for g in got)


def test_keyed_draws_follow_the_softmax() -> None:
    """20,000 keyed draws from softmax([0, 1, 2, 3] / 0.7): each token's share within four
    standard errors of its probability (the draws are deterministic: no flakiness)."""
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0])
    n, temperature = 20_000, 0.7
    keys = [k for i in range(n // 4) for k in sample_keys(1234, i, 4)]
    scores = logits.expand(n, -1).clone()
    out = _KeyedSampler(keys, temperature, prompt_width=5)(torch.zeros(n, 9), scores)
    assert torch.isfinite(out).sum(dim=1).tolist() == [1] * n  # one token left per row
    counts = torch.bincount(out.argmax(dim=1), minlength=4).double() / n
    probs = torch.softmax(logits.double() / temperature, dim=0)
    for p, c in zip(probs.tolist(), counts.tolist(), strict=True):
        assert abs(c - p) < 4 * math.sqrt(p * (1 - p) / n), (counts, probs)


def test_sampled_generations_do_not_depend_on_the_batch(tiny_model) -> None:
    model, tok = tiny_model
    prompts = ["def add(a, b):\n", "x = ", "import", "class A:\n    def f(self):\n", "# a"]
    requests = [
        GenerationRequest(i, tok(p, add_special_tokens=False)["input_ids"])
        for i, p in enumerate(prompts)
    ]
    common = {
        "max_new_tokens": 8,
        "max_seq_len": 256,
        "pad_id": tok.pad_token_id if tok.pad_token_id is not None else 0,
        "device": torch.device("cpu"),
        "num_samples": 3,
        "temperature": 1.0,
    }
    one = generate_texts(model, tok, requests, batch_size=1, seed=7, **common)
    five = generate_texts(model, tok, requests, batch_size=5, seed=7, **common)
    assert one == five
    # a subset (as one GPU of several gets) gives the same samples for its examples
    shard = generate_texts(model, tok, requests[1::2], batch_size=2, seed=7, **common)
    assert shard == one[1::2]
    # the samples of one example differ from each other, and another seed draws others
    assert any(len(set(samples)) > 1 for samples in one)
    assert generate_texts(model, tok, requests, batch_size=5, seed=8, **common) != one


def test_greedy_generation_is_unchanged_by_the_sampler(tiny_model) -> None:
    """temperature 0 stays plain greedy decoding: the same tokens as transformers' generate."""
    model, tok = tiny_model
    ids = tok("def add(a, b):\n", add_special_tokens=False)["input_ids"]
    (out,) = generate_texts(
        model,
        tok,
        [GenerationRequest(0, ids)],
        batch_size=4,
        max_new_tokens=6,
        max_seq_len=256,
        pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
        device=torch.device("cpu"),
    )
    with torch.inference_mode():
        ref = model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
        )  # fmt: skip
    assert out == [tok.decode(ref[0, len(ids) :].tolist(), skip_special_tokens=True)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_keyed_draws_are_the_same_on_the_gpu() -> None:
    """The hash's int64 arithmetic and the draws agree between CUDA and the CPU, so a task
    scored on GPUs samples what it samples on a CPU."""
    values = torch.randint(0, 2**32, (10_000,), dtype=torch.int64, generator=torch.Generator())
    assert torch.equal(_hash32_t(values.cuda()).cpu(), _hash32_t(values))
    n = 4096
    keys = [k for i in range(n // 4) for k in sample_keys(99, i, 4)]
    scores = torch.randn(n, 300, generator=torch.Generator().manual_seed(0))
    sampler = _KeyedSampler(keys, 0.8, prompt_width=3)
    on_cpu = sampler(torch.zeros(n, 7), scores).argmax(dim=1)
    on_gpu = sampler(torch.zeros(n, 7).cuda(), scores.cuda()).argmax(dim=1).cpu()
    assert (on_cpu == on_gpu).float().mean() > 0.999  # a rounding tie may differ, no more
