"""Back ends that run one decoder step with a key/value cache: torch and ONNX Runtime.

Both expose the same :class:`Engine` protocol over numpy inputs; their caches stay in the back
end's own array type (torch tensors on the model's device, numpy arrays for ONNX Runtime) and
are handled by :mod:`foundry_infer.kv_batch`.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import numpy as np

from .errors import FoundryError
from .kv_batch import Past
from .kv_graph import CacheLayout, cache_layout
from .model_dir import detect_model_kind
from .ort_engine import OrtEngine, Provider, ort_providers

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

__all__ = ["Engine", "OrtEngine", "TorchEngine", "load_engine", "ort_providers"]

TorchPath = Literal["auto", "static", "dynamic"]

# `auto` takes the static engine on CUDA (MPT and Llama) since tests/test_gpu.py passed on a GPU:
# its engine tests on one H200 and on one H100 80GB, the server test (the official `openai` client,
# streaming, on CUDA) on the H100 (2026-12-05, issue 21). False makes `auto` the dynamic path again.
STATIC_BY_DEFAULT = True
log = logging.getLogger("foundry_infer")


class Engine(Protocol):
    """One decoder step over a batch, with the cache in and out."""

    name: str
    layout: CacheLayout

    def empty_past(self, batch: int) -> Past: ...

    def step(
        self,
        input_ids: np.ndarray,  # (B, T) int64
        attention_mask: np.ndarray,  # (B, P + T) int64
        position_ids: np.ndarray,  # (B, T) int64
        past: Past,
    ) -> tuple[np.ndarray, Past]:  # logits (B, V) float32, present
        ...


class TorchEngine:
    """Runs a transformers causal LM through :class:`~foundry_infer.kv_graph.FlatCacheStep`."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise FoundryError(
                "--device cuda was given but torch sees no CUDA GPU. Use --device cpu."
            )
        torch_dtype = _torch_dtype(dtype, self.device.type)
        try:
            # transformers leaves from_pretrained's *model_args/**kwargs unannotated (Unknown).
            model = AutoModelForCausalLM.from_pretrained(  # pyright: ignore[reportUnknownMemberType]
                str(model_dir), dtype=torch_dtype
            )
        except (OSError, ValueError, pickle.UnpicklingError) as exc:
            raise FoundryError(
                f"cannot load a causal LM from {model_dir}: {exc}. Give a Hugging Face model "
                "directory with config.json and weights."
            ) from exc
        model = model.to(self.device).eval()  # type: ignore[arg-type]
        from .kv_graph import FlatCacheStep

        self.model = model
        self.step_module = FlatCacheStep(model).eval()
        self.layout = self.step_module.layout
        self.dtype = torch_dtype
        self.name = f"torch-{self.device.type}"

    def weight_bytes_per_token(self) -> int:
        """Bytes of weights one decode step reads: all but the embedding table (one row read),
        unless the table is tied to the output projection."""
        seen: set[int] = set()
        total = 0
        for p in self.model.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
        # transformers types these getters loosely (an nn.Module or None)
        embed: torch.Tensor = self.model.get_input_embeddings().weight  # pyright: ignore[reportAssignmentType]
        output: Any = self.model.get_output_embeddings()  # pyright: ignore[reportUnknownVariableType]
        head: torch.Tensor | None = getattr(output, "weight", None)  # pyright: ignore[reportUnknownArgumentType]
        tied = head is not None and head.data_ptr() == embed.data_ptr()
        return total if tied else total - embed.numel() * embed.element_size()

    def empty_past(self, batch: int) -> Past:
        shape = (batch, self.layout.num_kv_heads, 0, self.layout.head_dim)
        return [
            self._torch.zeros(shape, dtype=self.dtype, device=self.device)
            for _ in range(2 * self.layout.num_layers)
        ]

    def step(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: Past,
    ) -> tuple[np.ndarray, Past]:
        torch = self._torch
        with torch.inference_mode():
            # as_tensor wraps a numpy array without a copy, as from_numpy (untyped stub) does
            outputs = self.step_module(
                torch.as_tensor(input_ids).to(self.device),
                torch.as_tensor(attention_mask).to(self.device),
                torch.as_tensor(position_ids).to(self.device),
                *past,
            )
        logits = outputs[0].float().cpu().numpy()
        return logits, list(outputs[1:])


def _torch_dtype(dtype: str, device_type: str) -> torch.dtype:
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device_type == "cuda" else torch.float32
    if dtype not in table:
        raise FoundryError(f"unknown dtype {dtype!r}. Choose one of auto, {', '.join(table)}.")
    return table[dtype]


def load_engine(
    model: str | Path,
    backend: Literal["auto", "torch", "onnx"] = "auto",
    *,
    device: str = "cpu",
    provider: Provider = "auto",
    dtype: str = "auto",
    engine: TorchPath = "auto",
    max_batch_size: int = 8,
    max_len: int | None = None,
    compile_decode: bool = False,
    fit_slots: bool = False,
) -> Engine:
    """Open MODEL (an HF or ONNX directory) with the matching back end.

    ``dtype`` (auto, float32, bfloat16, float16) sets the torch weights' type; auto is bfloat16
    on CUDA and float32 on CPU. An ONNX export's graph has the type it was exported with: only
    auto and that type apply to it. ``engine`` picks the torch path: ``static`` (a slot cache
    of ``max_batch_size`` slots x ``max_len`` positions, CUDA graphs on a GPU; MPT and Llama),
    ``dynamic`` (any architecture) or ``auto`` (static on CUDA for MPT and Llama, else dynamic; see
    ``STATIC_BY_DEFAULT``).
    ``compile_decode`` (static engine only) runs its decode layers through ``torch.compile``.
    ``fit_slots``: the static engine on CUDA takes fewer than ``max_batch_size`` slots where
    that many would not fit in the GPU's free memory (``serve`` without ``--max-batch-size``).
    """
    kind = detect_model_kind(model)
    if backend == "auto":
        backend = "onnx" if kind == "onnx" else "torch"
    if backend == "onnx" and kind != "onnx":
        raise FoundryError(
            f"--backend onnx needs an ONNX directory, but {model} is a Hugging Face directory. "
            f"Export it first: foundry-infer export-onnx {model} OUT_DIR."
        )
    if backend == "torch" and kind != "hf":
        raise FoundryError(
            f"--backend torch needs a Hugging Face directory, but {model} is an ONNX directory. "
            "Use --backend onnx (or auto)."
        )
    static = backend == "torch" and _torch_path(model, device, engine) == "static"
    if compile_decode and not static:
        raise FoundryError(
            "--compile-decode applies to the static torch engine only; add --engine static "
            "(MPT and Llama models, --backend torch)."
        )
    if backend == "onnx":
        return OrtEngine(model, provider=provider, dtype=dtype)
    if not static:
        return TorchEngine(model, device=device, dtype=dtype)
    from .slot_engine import SlotEngine

    return SlotEngine(
        model,
        device,
        dtype,
        max_batch_size=max_batch_size,
        max_len=max_len,
        compile_decode=compile_decode,
        fit_slots=fit_slots,
    )


def _torch_path(model: str | Path, device: str, engine: TorchPath) -> str:
    """Which torch path runs; ``auto`` says so on stderr when a GPU gets the dynamic one."""
    from .slot_forward import SLOT_ARCHITECTURES

    if engine != "auto":
        return engine
    if not STATIC_BY_DEFAULT or not device.startswith("cuda"):
        return "dynamic"
    try:
        model_type = layout_of(model).model_type
    except (OSError, ValueError):  # TorchEngine reports an unloadable directory
        return "dynamic"
    if model_type in SLOT_ARCHITECTURES:
        return "static"
    log.warning(
        "foundry-infer: no static-slot forward for model_type %r (there is one for %s); the torch "
        "engine runs the dynamic-cache path, without CUDA graphs (--engine dynamic).",
        model_type,
        ", ".join(SLOT_ARCHITECTURES),
    )
    return "dynamic"


def layout_of(model_dir: str | Path) -> CacheLayout:
    """The cache geometry of an HF directory, without loading weights."""
    from transformers import AutoConfig

    # transformers leaves from_pretrained's **kwargs unannotated (Unknown).
    config = cast(
        "PretrainedConfig",
        AutoConfig.from_pretrained(str(model_dir)),  # pyright: ignore[reportUnknownMemberType]
    )
    return cache_layout(config)
