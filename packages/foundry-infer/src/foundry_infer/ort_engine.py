"""The ONNX Runtime engine: CPU or CUDA provider, with the key/value cache kept on the device.

With IO binding (the default on CUDA) each step binds the cache tensors the previous step left
on the device as its inputs and asks for the new cache on the device, so a decode step moves only
token ids in and logits out. A batch that gains or loses a row reshapes its cache on the host
(:mod:`foundry_infer.kv_batch` reads device values back), then binds the result again.

onnxruntime-gpu's CUDA provider links CUDA 13 (libcudart.so.13, libcublas.so.13, cuDNN): before
a CUDA session opens, :func:`prepare_cuda_libraries` loads those from the NVIDIA wheels torch is
installed with (``onnxruntime.preload_dlls``), so no system CUDA is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import FoundryError
from .kv_batch import Past
from .kv_graph import CacheLayout, input_names, output_names
from .model_dir import ONNX_MODEL_NAME, OnnxManifest
from .ort_api import import_onnxruntime

__all__ = ["OrtEngine", "Provider", "ort_providers", "prepare_cuda_libraries"]

Provider = Literal["auto", "cpu", "cuda"]
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}
_prepared = False


def prepare_cuda_libraries() -> None:
    """Load the CUDA 13 libraries onnxruntime-gpu links before its CUDA provider opens (once).

    torch built for the same CUDA major loads libcudart/libcublas/cuDNN from its NVIDIA wheels
    when imported, and the provider library then finds them in the process;
    ``onnxruntime.preload_dlls`` (onnxruntime >= 1.21) also loads them from the nvidia-* wheels'
    folders when torch was built for another CUDA."""
    global _prepared
    if _prepared:
        return
    try:
        import torch

        torch.cuda.is_available()
    except ImportError:  # an ONNX-only host: the wheels' folders are all there is
        pass
    ort: Any = import_onnxruntime()
    preload = getattr(ort, "preload_dlls", None)
    if callable(preload):
        preload(cuda=True, cudnn=True, msvc=False)
    _prepared = True


def ort_providers(provider: Provider = "auto") -> list[str]:
    """The ONNX Runtime execution providers to use: CUDA where onnxruntime-gpu offers it."""
    available = import_onnxruntime().get_available_providers()
    if provider == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise FoundryError(
                "the CUDA provider was requested but this onnxruntime has none (available: "
                f"{', '.join(available)}). Install foundry-infer[gpu] (onnxruntime-gpu)."
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "auto" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtEngine:
    """Runs an ONNX directory written by ``export-onnx`` with ONNX Runtime (see module doc)."""

    def __init__(
        self,
        onnx_dir: str | Path,
        provider: Provider = "auto",
        threads: int | None = None,
        *,
        dtype: str = "auto",
        io_binding: bool | None = None,
    ) -> None:
        ort = import_onnxruntime()
        directory = Path(onnx_dir)
        self.manifest = m = OnnxManifest.read(directory)
        if dtype not in ("auto", m.dtype):
            raise FoundryError(
                f"--dtype {dtype} does not match {directory}, an ONNX export in {m.dtype}. Use "
                "--dtype auto, or serve an export of that type (`foundry-infer export-onnx "
                "MODEL_DIR OUT --dtype float16` writes a float16 one; float32 is the default)."
            )
        self.layout = CacheLayout(
            num_layers=m.num_layers,
            num_kv_heads=m.num_kv_heads,
            head_dim=m.head_dim,
            vocab_size=m.vocab_size,
            max_positions=m.max_positions,
            model_type=m.model_type,
        )
        providers = ort_providers(provider)
        if providers[0] == "CUDAExecutionProvider":
            prepare_cuda_libraries()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or int(os.environ.get("FOUNDRY_INFER_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
        self.session: Any = ort.InferenceSession(
            str(directory / ONNX_MODEL_NAME), sess_options=options, providers=providers
        )
        graph_inputs = {i.name for i in self.session.get_inputs()}
        self._past_names = input_names(m.num_layers)[3:]
        self._present_names = output_names(m.num_layers)[1:]
        self._feeds_position_ids = "position_ids" in graph_inputs
        self._feeds_mask = "attention_mask" in graph_inputs
        self.provider = self.session.get_providers()[0]
        on_cuda = "CUDA" in self.provider
        self.io_binding = on_cuda if io_binding is None else io_binding
        self._device = "cuda" if on_cuda else "cpu"
        self.dtype = _NUMPY_DTYPES[m.dtype]
        quant = "-int8" if m.quantization == "int8" else ""
        half = "-fp16" if m.dtype == "float16" else ""
        self.name = f"onnxruntime{quant}{half}-{self._device}"

    def empty_past(self, batch: int) -> Past:
        shape = (batch, self.layout.num_kv_heads, 0, self.layout.head_dim)
        return [np.zeros(shape, dtype=self.dtype) for _ in range(2 * self.layout.num_layers)]

    def _feed(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray
    ) -> dict[str, np.ndarray]:
        feed = {"input_ids": input_ids}
        if self._feeds_mask:
            feed["attention_mask"] = attention_mask
        if self._feeds_position_ids:
            feed["position_ids"] = position_ids
        return feed

    def step(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: Past,
    ) -> tuple[np.ndarray, Past]:
        feed: dict[str, Any] = self._feed(input_ids, attention_mask, position_ids)
        if self.io_binding:
            return self._bound_step(feed, past)
        feed.update(zip(self._past_names, past, strict=True))
        outputs = [np.asarray(x) for x in self.session.run(None, feed)]  # all dense arrays
        return outputs[0].astype(np.float32, copy=False), outputs[1:]

    def _bound_step(self, feed: dict[str, Any], past: Past) -> tuple[np.ndarray, Past]:
        """One step with the cache bound on the device: OrtValues in, OrtValues out."""
        binding = self.session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, value in zip(self._past_names, past, strict=True):
            if isinstance(value, np.ndarray):  # a cache reshaped on the host (a row joined/left)
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._present_names:
            binding.bind_output(name, self._device)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = np.asarray(outputs[0].numpy()).astype(np.float32, copy=False)
        return logits, list(outputs[1:])
