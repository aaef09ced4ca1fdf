"""The static engine's compiled decode (``compile_decode``) on CPU with inductor's C++ backend:
the same fp32 greedy tokens as the eager slot forward and the dynamic path, alone and with
sequences joining and leaving, and a fixed number of compiles across batch buckets."""

from __future__ import annotations

import pytest
import torch
from foundry_infer import SequenceState, TorchEngine, generate_tokens, load_engine
from foundry_infer.errors import FoundryError
from foundry_infer.sampling import SamplingParams
from foundry_infer.slot_engine import SlotEngine
from joining import run_joining

PROMPTS = ["def export_onnx(", "class Scheduler:", "import numpy", "    return"]
MODELS = ["trained_llama_dir", "mpt_dir"]


@pytest.fixture(scope="module")
def engines(request) -> dict[str, tuple[TorchEngine, SlotEngine, SlotEngine]]:
    """Per model: the dynamic path, the eager static engine and the compiled one (4 slots)."""
    made = {}
    for model in MODELS:
        path = request.getfixturevalue(model)
        made[model] = (
            TorchEngine(path),
            SlotEngine(path, max_batch_size=4),
            SlotEngine(path, max_batch_size=4, compile_decode=True),
        )
    return made


def _params() -> SamplingParams:
    return SamplingParams(ignore_eos=True)


def _alone(engine, ids: list[int], n: int) -> list[int]:
    return list(generate_tokens(engine, SequenceState(ids, n, _params())))


LENGTHS = [32, 6, 14, 9, 12]


def _joining_and_leaving(engine, tokenizer) -> list[list[int]]:
    """Five sequences on one batch, admitted at different steps, of different lengths."""
    seqs = [
        SequenceState(tokenizer(PROMPTS[i % 4]).input_ids, n, _params())
        for i, n in enumerate(LENGTHS)
    ]
    batch = engine.new_batch()
    got = run_joining(batch, seqs, {0: [0, 1], 3: [2], 5: [3], 9: [4]}, 40)
    assert batch.largest_batch == 4 and len(batch) == 0
    return got


@pytest.mark.parametrize("model", MODELS)
def test_compiled_decode_gives_the_eager_and_dynamic_greedy_tokens(model, engines, tokenizer):
    dynamic, eager, compiled = engines[model]
    assert compiled.name == "torch-static-cpu-compiled" and eager.name == "torch-static-cpu"
    ids = tokenizer(PROMPTS[0]).input_ids
    want = _alone(dynamic, ids, 32)
    assert _alone(eager, ids, 32) == want
    assert _alone(compiled, ids, 32) == want


@pytest.mark.parametrize("model", MODELS)
def test_compiled_decode_batches_joining_and_leaving_like_eager(model, engines, tokenizer):
    dynamic, eager, compiled = engines[model]
    got = _joining_and_leaving(compiled, tokenizer)
    assert got == _joining_and_leaving(eager, tokenizer)
    solo = [_alone(dynamic, tokenizer(PROMPTS[i % 4]).input_ids, n) for i, n in enumerate(LENGTHS)]
    assert got == solo


def test_batch_buckets_do_not_recompile(trained_llama_dir, tokenizer):
    """Buckets 1, 2, 4 (and 8): one static graph per half (batch 1), one dynamic (larger)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # other tests' compiled entries would hide this engine's compiles
    counters.clear()
    engine = SlotEngine(trained_llama_dir, max_batch_size=8, compile_decode=True)
    ids = tokenizer(PROMPTS[1]).input_ids
    with torch.inference_mode():
        for bucket in engine.buckets:
            engine.prefill(bucket - 1, ids)
            for step in range(3):
                engine.decode([ids[-1]] * bucket, [len(ids) + step] * bucket)
    # two compiled halves x (batch 1, dynamic batch); a recompile per bucket would give 8
    assert counters["stats"]["unique_graphs"] == 4, dict(counters["stats"])


def test_warm_compiled_compiles_every_bucket_before_the_first_request(trained_llama_dir, tokenizer):
    """On a CPU (no CUDA graphs to capture) serve warms the compiled layers at start-up: after
    ``warm_compiled`` no batch size compiles anything in front of a request."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    engine = SlotEngine(trained_llama_dir, max_batch_size=8, compile_decode=True)
    assert engine.warm_compiled() == len(engine.buckets) == 4
    warmed = counters["stats"]["unique_graphs"]
    assert warmed == 4, dict(counters["stats"])  # as in test_batch_buckets_do_not_recompile
    ids = tokenizer(PROMPTS[2]).input_ids
    with torch.inference_mode():
        for bucket in (3, 8, 1, 5):  # padded to buckets 4, 8, 1, 8
            engine.prefill(bucket - 1, ids)
            engine.decode([ids[-1]] * bucket, [len(ids)] * bucket)
    assert counters["stats"]["unique_graphs"] == warmed, dict(counters["stats"])
    assert SlotEngine(trained_llama_dir, max_batch_size=2).warm_compiled() == 0  # nothing to warm


def test_compile_decode_needs_the_static_engine(trained_llama_dir):
    with pytest.raises(FoundryError, match="--engine static"):
        load_engine(trained_llama_dir, compile_decode=True)  # auto on CPU: the dynamic path
    engine = load_engine(trained_llama_dir, engine="static", compile_decode=True, max_len=64)
    assert engine.name == "torch-static-cpu-compiled"


def test_decode_compile_mode_lever(trained_llama_dir, monkeypatch):
    """FOUNDRY_DECODE_COMPILE_MODE reaches torch.compile; a mode that captures its own CUDA graphs
    (or a typo) is refused when the engine opens, naming the variable and the modes it takes."""
    from foundry_infer import slot_compiled

    seen: list[str] = []
    compile_fn = torch.compile

    def recording(fn, **kwargs):
        seen.append(kwargs["mode"])
        return compile_fn(fn, **{**kwargs, "mode": "default"})

    monkeypatch.setattr(slot_compiled.torch, "compile", recording)
    monkeypatch.setenv(slot_compiled.MODE_VARIABLE, "max-autotune-no-cudagraphs")
    load_engine(trained_llama_dir, engine="static", compile_decode=True, max_len=64)
    assert seen == ["max-autotune-no-cudagraphs"] * 2  # attn_in and attn_out
    for bad in ("reduce-overhead", "max-autotune", "fast"):
        monkeypatch.setenv(slot_compiled.MODE_VARIABLE, bad)
        with pytest.raises(FoundryError, match=f"FOUNDRY_DECODE_COMPILE_MODE='{bad}'.*unset it"):
            load_engine(trained_llama_dir, engine="static", compile_decode=True, max_len=64)


def test_bench_and_serve_take_compile_decode(trained_llama_dir, tmp_path):
    import json

    from foundry_infer.cli import build_parser, main

    serve = build_parser().parse_args(["serve", "m", "--engine", "static", "--compile-decode"])
    assert serve.compile_decode and not build_parser().parse_args(["serve", "m"]).compile_decode
    out = tmp_path / "rows.json"
    argv = ["bench", str(trained_llama_dir), "--backends", "torch", "--engine", "static"]
    argv += ["--compile-decode", "--batch-sizes", "1,2", "--prompt-tokens", "8"]
    assert main([*argv, "--new-tokens", "4", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["torch-static-cpu-compiled"] * 2


def test_decode_compile_mode_defaults_to_autotuning_on_cuda_only(monkeypatch):
    """Unset, CUDA autotunes (measured faster on an H100) and a CPU compiles plainly; the
    variable overrides either."""
    from foundry_infer.slot_compiled import MODE_VARIABLE, compile_mode

    monkeypatch.delenv(MODE_VARIABLE, raising=False)
    assert compile_mode("cuda") == "max-autotune-no-cudagraphs"
    assert compile_mode("cpu") == "default"
    monkeypatch.setenv(MODE_VARIABLE, "default")
    assert compile_mode("cuda") == "default"
