"""GPU paths: the torch engine on CUDA and ONNX Runtime's CUDA provider (where installed)."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from foundry_infer import OrtEngine, SequenceState, TorchEngine, generate_tokens

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_ort_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu with the CUDA provider",
)
PROMPT = "def export_onnx("


def _greedy(engine, tokenizer, n: int = 16) -> list[int]:
    return list(generate_tokens(engine, SequenceState(tokenizer(PROMPT).input_ids, n)))


@pytest.mark.gpu
@needs_cuda
def test_torch_engine_on_cuda_matches_cpu(trained_llama_dir, tokenizer):
    cuda = TorchEngine(trained_llama_dir, device="cuda", dtype="float32")
    assert cuda.name == "torch-cuda"
    assert _greedy(cuda, tokenizer) == _greedy(TorchEngine(trained_llama_dir), tokenizer)


@pytest.mark.gpu
@needs_cuda
@needs_ort_cuda
def test_onnxruntime_cuda_provider_matches_cpu(llama_onnx_dir, tokenizer):
    gpu = OrtEngine(llama_onnx_dir, provider="cuda")
    assert gpu.provider == "CUDAExecutionProvider"
    assert _greedy(gpu, tokenizer) == _greedy(OrtEngine(llama_onnx_dir, provider="cpu"), tokenizer)


# ---------------------------------------------------------------- the static-slot engine on CUDA
def _solo_and_joining(engine, reference, tokenizer):
    """Each sequence alone on ``reference``, then all on ``engine`` joining/leaving mid-decode."""
    from foundry_infer.sampling import SamplingParams

    prompts = ["def export_onnx(", "class Scheduler:", "import numpy", "    return", "# The"]
    lengths = [32, 7, 20, 11, 16]
    make = [
        (tokenizer(p).input_ids, n, SamplingParams(ignore_eos=True))
        for p, n in zip(prompts, lengths, strict=True)
    ]
    solo = [list(generate_tokens(reference, SequenceState(*m))) for m in make]
    seqs = [SequenceState(*m) for m in make]
    from joining import run_joining

    batch = engine.new_batch()
    return solo, run_joining(batch, seqs, {0: [0, 1], 2: [2], 9: [3], 12: [4]}, 48), batch


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["trained_llama_dir", "mpt_dir"])
def test_static_cuda_graph_engine_equals_dynamic_and_cpu_in_fp32(model, request, tokenizer):
    from foundry_infer.slot_engine import SlotEngine

    path = request.getfixturevalue(model)
    static = SlotEngine(path, device="cuda", dtype="float32", max_batch_size=8)
    assert static.cuda_graphs and static.name == "torch-static-cuda-cudagraphs"
    dynamic = TorchEngine(path, device="cuda", dtype="float32")
    cpu = TorchEngine(path)
    ids = tokenizer(PROMPT).input_ids
    for n in (32,):
        want = list(generate_tokens(cpu, SequenceState(ids, n)))
        assert list(generate_tokens(static, SequenceState(ids, n))) == want
        assert list(generate_tokens(dynamic, SequenceState(ids, n))) == want
    assert static._graphs, "no CUDA graph was captured"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["trained_llama_dir", "mpt_dir"])
def test_continuous_batching_on_cuda_gives_each_request_its_solo_tokens(model, request, tokenizer):
    from foundry_infer.slot_engine import SlotEngine

    path = request.getfixturevalue(model)
    static = SlotEngine(path, device="cuda", dtype="float32", max_batch_size=8)
    solo, together, batch = _solo_and_joining(static, TorchEngine(path), tokenizer)
    assert batch.largest_batch >= 3 and together == solo
    buckets = {bucket for bucket, _ in static._graphs}
    assert len(buckets) >= 2, buckets  # several batch buckets were captured and replayed


def _cpu_tokens_alone_and_batched(static, path, tokenizer) -> None:
    """``static`` (fp32, CUDA graphs) gives the CPU's greedy tokens alone, and each request its
    solo tokens when batched with joining and leaving, over at least two batch buckets."""
    cpu = TorchEngine(path)
    ids = tokenizer(PROMPT).input_ids
    want = list(generate_tokens(cpu, SequenceState(ids, 32)))
    assert list(generate_tokens(static, SequenceState(ids, 32))) == want
    solo, together, batch = _solo_and_joining(static, cpu, tokenizer)
    assert batch.largest_batch >= 3 and together == solo
    assert len({bucket for bucket, _ in static._graphs}) >= 2, static._graphs


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["trained_llama_dir", "mpt_dir"])
def test_compiled_decode_in_cuda_graphs_gives_the_cpu_tokens_in_fp32(model, request, tokenizer):
    """--compile-decode: inductor's kernels captured in the CUDA graphs, alone and batched."""
    from foundry_infer.slot_engine import SlotEngine

    path = request.getfixturevalue(model)
    static = SlotEngine(path, device="cuda", dtype="float32", max_batch_size=8, compile_decode=True)
    assert static.cuda_graphs and static.name == "torch-static-cuda-cudagraphs-compiled"
    _cpu_tokens_alone_and_batched(static, path, tokenizer)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["trained_llama_dir", "mpt_dir"])
@pytest.mark.parametrize("compile_decode", [False, True])
def test_triton_decode_attention_in_cuda_graphs_gives_the_cpu_tokens_in_fp32(
    model, compile_decode, request, tokenizer, monkeypatch
):
    """FOUNDRY_DECODE_ATTENTION=triton: the one-kernel cache write and attention, captured in
    the CUDA graphs (eager and compiled layers), alone and batched with joining and leaving."""
    pytest.importorskip("triton")
    from foundry_infer.slot_engine import SlotEngine

    monkeypatch.setenv("FOUNDRY_DECODE_ATTENTION", "triton")
    path = request.getfixturevalue(model)
    static = SlotEngine(
        path, device="cuda", dtype="float32", max_batch_size=8, compile_decode=compile_decode
    )
    assert static.cuda_graphs and static.name.endswith("-triton-attention"), static.name
    _cpu_tokens_alone_and_batched(static, path, tokenizer)


@pytest.mark.gpu
@needs_cuda
def test_static_engine_fits_its_slots_to_the_free_memory(trained_llama_dir):
    from foundry_infer.slot_engine import FIT_SHARE, SlotEngine

    asked = SlotEngine(trained_llama_dir, device="cuda", max_batch_size=4, max_len=64)
    slot = asked.cache_bytes() // 4
    del asked
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    want = min(64, int(FIT_SHARE * free // slot))  # a tiny model: all 64 fit
    fitted = SlotEngine(
        trained_llama_dir, device="cuda", max_batch_size=64, max_len=64, fit_slots=True
    )
    assert fitted.cache_bytes() <= FIT_SHARE * free
    assert abs(fitted.max_batch_size - want) <= 1, (fitted.max_batch_size, want)


@pytest.mark.gpu
@needs_cuda
def test_server_on_cuda_answers_the_openai_client_streaming(trained_llama_dir, tokenizer):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import openai
    from serve_process import serving

    prompts = ["def ", "class ", "import ", "    return ", "from .", "# The"]
    flags = [
        "--device",
        "cuda",
        "--engine",
        "static",
        "--dtype",
        "float32",
        "--max-model-len",
        "256",
    ]
    cpu = TorchEngine(trained_llama_dir)
    with serving(str(trained_llama_dir), flags) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["backend"] == "torch-static-cuda-cudagraphs", health
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        barrier = threading.Barrier(len(prompts))

        def ask(prompt: str) -> str:
            barrier.wait()
            stream = client.completions.create(
                model=trained_llama_dir.name,
                prompt=prompt,
                max_tokens=32,
                temperature=0,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            return "".join(chunk.choices[0].text for chunk in stream)

        with ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(ask, prompts))
        chat = client.chat.completions.create(
            model=trained_llama_dir.name,
            messages=[{"role": "user", "content": "def"}],
            max_tokens=8,
            stream=True,
        )
        assert any(c.choices and c.choices[0].delta.content for c in chat)
        assert httpx.get(f"{url}/health").json()["largest_batch"] >= 2
    for prompt, answer in zip(prompts, answers, strict=True):
        from foundry_infer.sampling import SamplingParams

        ids = tokenizer(prompt).input_ids
        seq = SequenceState(ids, 32, SamplingParams(ignore_eos=True))
        expected = tokenizer.decode(list(generate_tokens(cpu, seq)), skip_special_tokens=True)
        assert answer == expected


@pytest.mark.gpu
@needs_cuda
@needs_ort_cuda
def test_onnxruntime_cuda_io_binding_keeps_the_cache_on_the_gpu(llama_onnx_dir, tokenizer):
    gpu = OrtEngine(llama_onnx_dir, provider="cuda")
    assert gpu.io_binding
    ids = tokenizer(PROMPT).input_ids
    import numpy as np

    _, past = gpu.step(
        np.asarray([ids]),
        np.ones((1, len(ids)), np.int64),
        np.arange(len(ids))[None],
        gpu.empty_past(1),
    )
    assert past[0].device_name() == "cuda"
    plain = OrtEngine(llama_onnx_dir, provider="cuda", io_binding=False)
    assert _greedy(gpu, tokenizer, 32) == _greedy(plain, tokenizer, 32)
