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
