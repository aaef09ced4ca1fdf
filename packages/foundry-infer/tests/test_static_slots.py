"""The static-slot torch engine on CPU (no CUDA graphs): same greedy tokens as the dynamic path,
prefill logprobs, sampling controls, and continuous batching with requests joining and leaving."""

from __future__ import annotations

import pytest
from foundry_infer import SequenceState, TorchEngine, generate_tokens, load_engine
from foundry_infer.engines import _torch_path
from foundry_infer.errors import FoundryError
from foundry_infer.sampling import SamplingParams
from foundry_infer.slot_engine import SlotEngine, batch_buckets, slots_that_fit
from joining import run_joining

PROMPTS = ["def export_onnx(", "class Scheduler:", "import numpy", "    return"]


@pytest.fixture(scope="module")
def llama_pair(trained_llama_dir):
    return TorchEngine(trained_llama_dir), SlotEngine(trained_llama_dir, max_batch_size=4)


@pytest.fixture(scope="module")
def mpt_pair(mpt_dir):
    return TorchEngine(mpt_dir), SlotEngine(mpt_dir, max_batch_size=4)


def _alone(engine, ids: list[int], n: int) -> list[int]:
    return list(generate_tokens(engine, SequenceState(ids, n, ignore_eos_params())))


def ignore_eos_params() -> SamplingParams:
    return SamplingParams(ignore_eos=True)


@pytest.mark.parametrize("pair", ["llama_pair", "mpt_pair"])
def test_static_slots_give_the_dynamic_paths_greedy_tokens(pair, request, tokenizer):
    dynamic, static = request.getfixturevalue(pair)
    assert static.name == "torch-static-cpu" and not static.cuda_graphs
    for prompt in PROMPTS[:2]:
        ids = tokenizer(prompt).input_ids
        assert _alone(static, ids, 24) == _alone(dynamic, ids, 24)


def test_llama_projections_are_fused_without_a_second_copy(trained_llama_dir):
    """q/k/v and gate/up run as one product each; the modules' weights are views of the fused
    ones, so the weights take the memory they took before (and the bandwidth count is unchanged)."""
    import torch

    plain = TorchEngine(trained_llama_dir)
    static = SlotEngine(trained_llama_dir, max_batch_size=2)
    fwd = static.forward
    attn, mlp = fwd.layers[0].self_attn, fwd.layers[0].mlp
    (wqkv, _), (wgu, _) = fwd.qkv[0], fwd.gate_up[0]
    assert wqkv.shape[0] == sum(m.weight.shape[0] for m in (attn.q_proj, attn.k_proj, attn.v_proj))
    for module, fused in ((attn.q_proj, wqkv), (attn.v_proj, wqkv), (mlp.up_proj, wgu)):
        assert module.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    reference = plain.model.model.layers[0].self_attn
    assert torch.equal(attn.k_proj.weight, reference.k_proj.weight)  # the same numbers

    def held(model) -> tuple[int, int]:  # (storages, their bytes)
        storages = {p.untyped_storage().data_ptr(): p.untyped_storage() for p in model.parameters()}
        return len(storages), sum(s.nbytes() for s in storages.values())

    (fused_count, fused_bytes), (plain_count, plain_bytes) = held(static.model), held(plain.model)
    assert fused_bytes == plain_bytes and fused_count == plain_count - 3 * len(fwd.layers)
    assert static.weight_bytes_per_token() == plain.weight_bytes_per_token()


@pytest.mark.parametrize("pair", ["llama_pair", "mpt_pair"])
def test_requests_joining_and_leaving_get_their_solo_tokens(pair, request, tokenizer):
    dynamic, static = request.getfixturevalue(pair)
    lengths = [20, 6, 14, 9, 12]
    seqs = [
        SequenceState(tokenizer(PROMPTS[i % 4]).input_ids, n, ignore_eos_params())
        for i, n in enumerate(lengths)
    ]
    solo = [_alone(dynamic, s.prompt_ids, s.max_new_tokens) for s in seqs]
    batch = static.new_batch()
    joins = {0: [0, 1], 3: [2], 5: [3], 9: [4]}  # step -> sequences admitted before it
    got = run_joining(batch, seqs, joins, 40)
    assert batch.largest_batch == 4 and len(batch) == 0
    assert got == solo


def test_prompt_logprobs_and_logit_bias_match_the_dynamic_path(llama_pair, tokenizer):
    dynamic, static = llama_pair
    ids = tokenizer(PROMPTS[0]).input_ids
    banned = _alone(dynamic, ids, 1)[0]
    params = SamplingParams(logit_bias=((banned, -100.0),), ignore_eos=True)
    runs = []
    for engine in (dynamic, static):
        seq = SequenceState(ids, 6, params, logprobs=2, prompt_logprobs=True)
        runs.append((list(generate_tokens(engine, seq)), seq))
    (tokens_d, seq_d), (tokens_s, seq_s) = runs
    assert tokens_s == tokens_d and banned not in tokens_s
    for a, b in zip(seq_s.prompt_token_logprobs[1:], seq_d.prompt_token_logprobs[1:], strict=True):
        assert a.token == b.token and a.logprob == pytest.approx(b.logprob, abs=1e-4)
    assert [t.token for t in seq_s.token_logprobs] == tokens_s


def test_engine_choice_and_refusals(trained_llama_dir, gpt2_dir, tokenizer):
    assert batch_buckets(64) == [1, 2, 4, 8, 16, 32, 64] and batch_buckets(6) == [1, 2, 4, 6]
    assert load_engine(trained_llama_dir).name == "torch-cpu"  # auto on CPU: the dynamic path
    assert load_engine(gpt2_dir, engine="auto").name == "torch-cpu"
    # the choice itself (no engine opened): auto is static on CUDA for MPT and Llama only
    assert _torch_path(trained_llama_dir, "cuda", "auto") == "static"
    assert _torch_path(trained_llama_dir, "cuda:1", "auto") == "static"
    assert _torch_path(trained_llama_dir, "cpu", "auto") == "dynamic"
    assert _torch_path(gpt2_dir, "cuda", "auto") == "dynamic"
    assert _torch_path(trained_llama_dir, "cuda", "dynamic") == "dynamic"
    with pytest.raises(FoundryError, match="model_type 'gpt2'"):
        load_engine(gpt2_dir, engine="static")
    small = load_engine(trained_llama_dir, engine="static", max_batch_size=1, max_len=32)
    batch = small.new_batch()
    ids = tokenizer(PROMPTS[0]).input_ids
    with pytest.raises(FoundryError, match="32 positions"):
        batch.prefill(SequenceState(ids, 40))
    batch.prefill(SequenceState(ids, 8))
    with pytest.raises(FoundryError, match="cache slots are in use"):
        batch.prefill(SequenceState(ids, 8))


def test_slots_fit_the_free_memory_when_not_given(trained_llama_dir):
    gib = 2**30
    assert slots_that_fit(64, gib, 200 * gib, 2048) == 64  # room for more: the cap holds
    assert slots_that_fit(64, gib, 20 * gib, 2048) == 12  # 60% of 20 GiB
    assert slots_that_fit(8, gib // 2, 2 * gib, 2048) == 2
    with pytest.raises(FoundryError, match=r"one cache slot of 2048 positions needs 1\.00 GiB"):
        slots_that_fit(64, gib, gib, 2048)
    # on CPU nothing is fitted: the slots asked for are the slots held
    engine = SlotEngine(trained_llama_dir, max_batch_size=6, max_len=32, fit_slots=True)
    assert engine.max_batch_size == 6 and engine.buckets == [1, 2, 4, 6]


def test_serve_with_the_static_engine_batches_concurrent_streams_exactly(
    trained_llama_dir, tokenizer
):
    """The real command with --engine static: concurrent streamed answers equal solo ones."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import openai
    from serve_process import serving

    prompts = ["def ", "class ", "import ", "    return "]
    flags = ["--engine", "static", "--max-batch-size", "4", "--max-model-len", "128"]
    with serving(str(trained_llama_dir), flags) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        assert httpx.get(f"{url}/health").json()["backend"] == "torch-static-cpu"
        barrier = threading.Barrier(len(prompts))

        def ask(prompt: str, together: bool) -> str:
            if together:
                barrier.wait()
            stream = client.completions.create(
                model=trained_llama_dir.name,
                prompt=prompt,
                max_tokens=24,
                temperature=0,
                stream=True,
            )
            return "".join(chunk.choices[0].text for chunk in stream)

        alone = [ask(p, False) for p in prompts]
        with ThreadPoolExecutor(len(prompts)) as pool:
            together = list(pool.map(lambda p: ask(p, True), prompts))
        assert httpx.get(f"{url}/health").json()["largest_batch"] >= 2
    assert together == alone and all(alone)


def test_bench_times_the_static_engine_with_batch_ones_bandwidth_share(
    trained_llama_dir, tmp_path, capsys
):
    import json

    from foundry_infer.bench import peak_bandwidth_for
    from foundry_infer.cli import main

    assert peak_bandwidth_for("NVIDIA H200") == (4.8e12, "H200")
    assert peak_bandwidth_for("NVIDIA H100 80GB HBM3") == (3.35e12, "H100 SXM")
    assert peak_bandwidth_for("NVIDIA H100 PCIe")[0] == 2.0e12
    assert peak_bandwidth_for("Tesla T4") is None
    out = tmp_path / "rows.json"
    argv = ["bench", str(trained_llama_dir), "--backends", "torch", "--engine", "static"]
    argv += ["--batch-sizes", "1,3", "--prompt-tokens", "8", "--new-tokens", "4"]
    assert main([*argv, "--peak-bandwidth", "1e10", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "peak bandwidth 1e+10 B/s (--peak-bandwidth)" in captured.err
    assert "of peak BW" in captured.out
    rows = json.loads(out.read_text())
    assert [(r["backend"], r["batch"]) for r in rows] == [
        ("torch-static-cpu", 1),
        ("torch-static-cpu", 3),
    ]
    assert 0 < rows[0]["bandwidth_fraction"] < 1 and rows[1]["bandwidth_fraction"] is None


@pytest.mark.parametrize("pair", ["llama_pair", "mpt_pair"])
def test_prompts_prefilled_together_get_their_solo_tokens(pair, request, tokenizer, monkeypatch):
    """prefill_many: prompts of different lengths in one forward (right-padded), one of them
    done at its first token; then three more join the running row, with a token budget that
    splits them into a forward of two (written from slot 1 on) and one alone."""
    import foundry_infer.slot_batch as slot_batch

    dynamic, static = request.getfixturevalue(pair)
    calls: list[int] = []
    original = static.prefill_many
    monkeypatch.setattr(
        static,
        "prefill_many",
        lambda slot, prompts: calls.append(len(prompts)) or original(slot, prompts),
    )
    texts = ["def export_onnx(self, path):", "import", "class Scheduler:", "    return x", "# The"]
    seqs = [
        SequenceState(tokenizer(t).input_ids, n, ignore_eos_params())
        for t, n in zip(texts, [12, 1, 9, 15, 7], strict=True)
    ]
    solo = [_alone(dynamic, s.prompt_ids, s.max_new_tokens) for s in seqs]
    batch = static.new_batch()
    got = {s.uid: [t] for s, t in zip(seqs[:2], batch.prefill_many(seqs[:2]), strict=True)}
    assert len(batch) == 1  # the one-token sequence left at once
    for seq, token in batch.step():
        got[seq.uid].append(token)
    longest = max(len(s.prompt_ids) for s in seqs[2:])
    monkeypatch.setattr(slot_batch, "PREFILL_TOKENS", 2 * longest)
    got |= {s.uid: [t] for s, t in zip(seqs[2:], batch.prefill_many(seqs[2:]), strict=True)}
    while len(batch):
        for seq, token in batch.step():
            got[seq.uid].append(token)
    assert calls == [2, 2]  # the fifth prompt ran alone (the single-prompt prefill)
    assert [got[s.uid] for s in seqs] == solo


def test_prefilled_together_with_a_prompt_logprobs_request_in_the_middle(llama_pair, tokenizer):
    """A sequence asking for prompt logprobs splits the group: the ones before it run together,
    it runs alone (all-position logits), then the last; everyone gets the tokens, and it the
    prompt logprobs, that it gets alone (the engine has 4 slots)."""
    dynamic, static = llama_pair
    texts = ["def export_onnx(", "import", "class Scheduler:", "    return x"]
    wants = [False, False, True, False]

    def make(i: int) -> SequenceState:
        return SequenceState(
            tokenizer(texts[i]).input_ids, 8, ignore_eos_params(), logprobs=1,
            prompt_logprobs=wants[i],
        )  # fmt: skip

    alone = [make(i) for i in range(4)]
    solo = [list(generate_tokens(dynamic, s)) for s in alone]
    seqs = [make(i) for i in range(4)]
    batch = static.new_batch()
    got = {s.uid: [t] for s, t in zip(seqs, batch.prefill_many(seqs), strict=True)}
    while len(batch):
        for seq, token in batch.step():
            got[seq.uid].append(token)
    assert [got[s.uid] for s in seqs] == solo
    mine, theirs = seqs[2].prompt_token_logprobs, alone[2].prompt_token_logprobs
    assert len(mine) == len(theirs) > 1 and not seqs[0].prompt_token_logprobs
    for a, b in zip(mine[1:], theirs[1:], strict=True):
        assert a.token == b.token and a.logprob == pytest.approx(b.logprob, abs=1e-4)
