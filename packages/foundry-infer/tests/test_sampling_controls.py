"""logit_bias, min_tokens, ignore_eos and repetition_penalty on both back ends (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from foundry_infer import OrtEngine, SamplingParams, SequenceState, generate_tokens
from foundry_infer.engines import TorchEngine


@pytest.fixture(scope="module")
def engines(trained_llama_dir, llama_onnx_dir):
    return {
        "torch": TorchEngine(trained_llama_dir),
        "onnx": OrtEngine(llama_onnx_dir, provider="cpu"),
    }


def _eos(tokenizer) -> frozenset[int]:
    return frozenset({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")})


def _run(engine, tokenizer, prompt: str, n: int, **sampling) -> SequenceState:
    seq = SequenceState(tokenizer(prompt).input_ids, n, SamplingParams(**sampling), _eos(tokenizer))
    list(generate_tokens(engine, seq))
    return seq


def test_repetition_penalty_is_ctrl_style():
    from foundry_infer.sampling import adjust_logits

    logits = np.array([2.0, -1.0, 0.5, -3.0, 4.0], dtype=np.float32)
    out = adjust_logits(logits, SamplingParams(repetition_penalty=2.0), seen=[0, 1, 1, 3])
    # seen tokens: positive logits divided by the penalty, negative ones multiplied; others kept
    assert out.tolist() == [1.0, -2.0, 0.5, -6.0, 4.0]
    assert logits.tolist() == [2.0, -1.0, 0.5, -3.0, 4.0]  # input untouched


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_logit_bias_forbids_and_forces_tokens(backend, engines, tokenizer):
    engine = engines[backend]
    plain = _run(engine, tokenizer, "def render_chat(", 12)
    banned = plain.generated[0]
    biased = _run(engine, tokenizer, "def render_chat(", 12, logit_bias=((banned, -100.0),))
    assert banned not in biased.generated and biased.generated != plain.generated
    forced_token = tokenizer.convert_tokens_to_ids("x")
    forced = _run(engine, tokenizer, "def render_chat(", 5, logit_bias=((forced_token, 100.0),))
    assert forced.generated == [forced_token] * 5
    sampled = _run(
        engine, tokenizer, "class ", 8, temperature=1.0, seed=3, logit_bias=((banned, -100.0),)
    )
    assert banned not in sampled.generated


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_min_tokens_and_ignore_eos(backend, engines, tokenizer):
    engine = engines[backend]
    eos = tokenizer.eos_token_id
    to_eos = ((eos, 100.0),)  # the model would end at once
    assert _run(engine, tokenizer, "def ", 8, logit_bias=to_eos).generated == [eos]
    held = _run(engine, tokenizer, "def ", 8, logit_bias=to_eos, min_tokens=4)
    assert len(held.generated) == 5 and held.generated[-1] == eos
    assert not _eos(tokenizer) & set(held.generated[:4]) and held.finish_reason == "stop"
    going = _run(engine, tokenizer, "def ", 6, logit_bias=to_eos, ignore_eos=True)
    assert going.generated == [eos] * 6 and going.finish_reason == "length"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_repetition_penalty_matches_transformers_generate(
    backend, engines, tokenizer, trained_llama_dir
):
    from transformers import AutoModelForCausalLM

    prompt = "    def step(self, "
    ids = tokenizer(prompt).input_ids
    model = AutoModelForCausalLM.from_pretrained(trained_llama_dir, dtype=torch.float32).eval()
    expected = {}
    for penalty in (1.0, 1.8):
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=24,
            do_sample=False,
            repetition_penalty=penalty,
            eos_token_id=sorted(_eos(tokenizer)),
            pad_token_id=tokenizer.eos_token_id,
        )
        expected[penalty] = out[0, len(ids) :].tolist()
    assert expected[1.0] != expected[1.8]  # the penalty changes this output
    for penalty, tokens in expected.items():
        seq = _run(engines[backend], tokenizer, prompt, 24, repetition_penalty=penalty)
        assert seq.generated == tokens[: len(seq.generated)] and len(seq.generated) == len(tokens)


def test_overflowing_scales_never_give_nan_probabilities() -> None:
    """A tiny temperature or repetition penalty (both accepted: > 0) overflows the logits to inf;
    sampling then picks the largest score instead of failing on NaN probabilities (a 500), and
    without numpy's overflow warnings in the server's log: the overflow is expected there."""
    import warnings

    import numpy as np
    from foundry_infer.sampling import SamplingParams, adjust_logits, sample_token

    warnings.simplefilter("error", RuntimeWarning)  # pytest restores the filters after the test
    logits = np.array([0.5, 2.0, -1.0, 1.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    # 0.5, 2.0 and 1.0 all overflow to inf at this temperature; its limit is greedy: token 1,
    # every time (a draw among the overflowed tokens would give 0 or 3 for some seed)
    tiny_t = SamplingParams(temperature=1e-310)
    for seed in range(20):
        assert sample_token(logits, tiny_t, np.random.default_rng(seed)) == 1
    # a temperature that leaves the top score finite (2 / T = 1.5e308) but puts token 2 so far
    # below it that their difference overflows: exp gives 0 there, without a warning
    near_limit = SamplingParams(temperature=1.3e-308)
    for seed in range(5):
        assert sample_token(logits, near_limit, np.random.default_rng(seed)) == 1
    penalised = adjust_logits(logits, SamplingParams(repetition_penalty=1e-310), seen=[0, 3])
    assert np.isinf(penalised).any()
    assert sample_token(penalised, SamplingParams(temperature=1.0), rng) in (0, 3)
    banned = np.full(4, -np.inf)
    assert sample_token(banned, SamplingParams(temperature=1.0), rng) == 0


def test_any_integer_seed_is_accepted_and_reproducible() -> None:
    """A negative or huge seed (valid JSON integers; schemathesis sent -1) samples reproducibly
    instead of failing inside numpy (a 500)."""
    import numpy as np
    from foundry_infer.sampling import SamplingParams, sample_token

    logits = np.linspace(0.0, 1.0, 50)
    for seed in (-1, 2**70, 0):
        params = SamplingParams(temperature=1.0, seed=seed)
        first = [sample_token(logits, params, params.make_rng()) for _ in range(1)]
        again = [sample_token(logits, params, params.make_rng()) for _ in range(1)]
        assert first == again
