"""The static engine's greedy steps can run one ahead (``SlotBatch.overlap``, off unless
``FOUNDRY_DECODE_OVERLAP=1``): the next step is queued, its input tokens taken from the device,
before the host reads the step in flight. On CPU the same code runs without CUDA graphs; these
tests check it changes no token, no finish reason and no slot, against the batch stepping one at
a time (``overlap = False``); on a GPU (``gpu`` marker) the same tests run in CUDA graphs."""

from __future__ import annotations

import pytest
import torch
from foundry_infer import SequenceState
from foundry_infer.sampling import SamplingParams
from foundry_infer.slot_engine import SlotEngine

PROMPTS = ["def export_onnx(", "class Scheduler:", "import numpy", "    return"]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(
    scope="module",
    params=["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])],
)
def engine(request, trained_llama_dir):
    """fp32 either way; on CUDA each step is a CUDA graph and the tokens cross through pinned
    memory behind an event."""
    device = request.param
    engine = SlotEngine(trained_llama_dir, device, "float32", max_batch_size=8, max_len=96)
    assert engine.cuda_graphs == (device == "cuda")
    return engine


def _batch(engine, overlap: bool):
    batch = engine.new_batch()
    batch.overlap = overlap
    return batch


def _run(engine, overlap, make, script, steps=40):
    """Drive a batch: ``script[call]`` (a function of the batch and the sequences) runs before
    that step() call; returns each sequence's tokens and finish reason."""
    seqs = make()
    batch = _batch(engine, overlap)
    for call in range(steps):
        if call in script:
            script[call](batch, seqs)
        batch.step()
    assert len(batch) == 0 or all(s.finished for s in seqs)
    return [(s.generated, s.finish_reason) for s in seqs]


def test_greedy_steps_chain_on_the_device_and_waste_no_step(engine, tokenizer, monkeypatch):
    launches: list[bool] = []  # True: chained on an earlier launch's device tokens
    original = engine.launch_greedy

    def spy(positions, tokens=None, after=None):
        launches.append(after is not None)
        return original(positions, tokens, after)

    monkeypatch.setattr(engine, "launch_greedy", spy)
    params = SamplingParams(ignore_eos=True)
    seq = SequenceState(tokenizer(PROMPTS[0]).input_ids, 8, params)
    batch = _batch(engine, True)
    batch.prefill(seq)
    first = batch.step()
    assert batch._ahead is not None, "the next step should be queued when a call returns"
    while not seq.finished:
        batch.step()
    # 7 decode steps for tokens 2..8: one from host tokens, then six chained, none past the limit
    assert launches == [False] + [True] * 6
    assert [t for _, t in first] == seq.generated[1:2]
    monkeypatch.undo()
    again = SequenceState(seq.prompt_ids, 8, params)
    plain = _batch(engine, False)
    plain.prefill(again)
    while not again.finished:
        plain.step()
    assert seq.generated == again.generated


def test_stops_cancels_and_joins_while_a_step_is_in_flight(engine, tokenizer):
    ids = [tokenizer(p).input_ids for p in PROMPTS]
    free = SamplingParams(ignore_eos=True)
    # a reference run gives a token the third prompt's row reaches at its 4th token: its eos
    probe = SequenceState(ids[2], 12, free)
    _run(engine, False, lambda: [probe], {0: lambda b, s: b.prefill(s[0])})
    eos = probe.generated[3]

    def make():
        return [
            SequenceState(ids[0], 14, free),
            SequenceState(ids[1], 5, free),  # ends by length while others go on
            SequenceState(ids[2], 12, SamplingParams(), frozenset({eos})),  # ends by eos
            SequenceState(ids[3], 20, free),  # cancelled after its second step
            SequenceState(ids[0], 9, free),  # joins while a step is in flight
            SequenceState(ids[1], 7, SamplingParams(temperature=0.8, seed=3)),  # sampled
        ]

    script = {
        0: lambda b, s: b.prefill_many(s[:4]),
        # its slot goes to the newcomer: same row count, another sequence in the last slot
        2: lambda b, s: (s[3].cancel(), b.prefill(s[4])),
        6: lambda b, s: b.prefill(s[5]),  # a sampled row: the batch steps one at a time
    }
    ahead = _run(engine, True, make, script)
    plain = _run(engine, False, make, script)
    assert ahead == plain
    reasons = [reason for _, reason in ahead]
    assert reasons == ["length", "length", "stop", "cancelled", "length", "length"]
    assert ahead[2][0][-1] == eos and len(ahead[2][0]) <= 4
    assert len(ahead[3][0]) == 3  # its first token and two steps


def test_overlap_is_on_by_default_on_cuda_only(engine, monkeypatch):
    from foundry_infer.errors import FoundryError
    from foundry_infer.slot_batch import OVERLAP_VARIABLE, overlap_wanted

    monkeypatch.delenv(OVERLAP_VARIABLE, raising=False)
    on_cuda = engine.device.type == "cuda"
    assert engine.new_batch().overlap == on_cuda  # the default: on for CUDA, off for CPU
    assert ("overlapped" in engine.startup_note()) == on_cuda
    assert overlap_wanted("cuda") and not overlap_wanted("cpu")
    monkeypatch.setenv(OVERLAP_VARIABLE, "1")
    assert engine.new_batch().overlap
    assert "greedy decode steps overlapped (FOUNDRY_DECODE_OVERLAP=0" in engine.startup_note()
    monkeypatch.setenv(OVERLAP_VARIABLE, "0")
    assert not overlap_wanted("cuda")
    monkeypatch.setenv(OVERLAP_VARIABLE, "yes")
    with pytest.raises(FoundryError, match="FOUNDRY_DECODE_OVERLAP='yes' is not a setting"):
        overlap_wanted("cuda")


def test_a_length_limit_of_one_or_two_tokens(engine, tokenizer):
    ids = tokenizer(PROMPTS[1]).input_ids
    for limit in (1, 2, 3):

        def make(limit=limit):
            return [SequenceState(ids, limit, SamplingParams(ignore_eos=True))]

        script = {0: lambda b, s: b.prefill(s[0])}
        ahead = _run(engine, True, make, script, steps=6)
        assert ahead == _run(engine, False, make, script, steps=6)
        assert len(ahead[0][0]) == limit
