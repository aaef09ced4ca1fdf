"""Sampling and incremental detokenisation."""

from __future__ import annotations

import numpy as np
import pytest
from foundry_infer import FoundryError, SamplingParams, TextStream
from foundry_infer.sampling import sample_token


def test_sampling_greedy_topk_topp_and_seed():
    logits = np.array([0.0, 3.0, 2.9, -1.0], dtype=np.float32)
    assert sample_token(logits, SamplingParams(), np.random.default_rng()) == 1
    k1 = SamplingParams(temperature=1.0, top_k=1, seed=0)
    assert {sample_token(logits, k1, k1.make_rng()) for _ in range(20)} == {1}
    p = SamplingParams(temperature=1.0, top_p=0.6, seed=3)
    rng = p.make_rng()
    assert {sample_token(logits, p, rng) for _ in range(50)} <= {1, 2}
    a, b = SamplingParams(temperature=1.5, seed=7), SamplingParams(temperature=1.5, seed=7)
    ra, rb = a.make_rng(), b.make_rng()
    assert [sample_token(logits, a, ra) for _ in range(30)] == [
        sample_token(logits, b, rb) for _ in range(30)
    ]
    with pytest.raises(FoundryError, match="top_p"):
        SamplingParams(top_p=0.0)


def test_text_stream_joins_split_characters_and_honours_stop(tokenizer):
    text = "naïve café — 日本 def x():\n    return 1"
    ids = tokenizer(text).input_ids
    stream = TextStream(tokenizer)
    pieces = [stream.push(t) for t in ids] + [stream.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)

    stopper = TextStream(tokenizer, stop=["return"])
    out = "".join(stopper.push(t) for t in ids) + stopper.finish()
    assert out == text[: text.index("return")]
    assert stopper.stopped
