"""foundry-infer: generate, chat, ONNX export with a KV cache, and an OpenAI-compatible server."""

from .engines import Engine, OrtEngine, TorchEngine, load_engine
from .errors import ExportError, FoundryError
from .generation import DecodeBatch, SequenceState, TextStream, generate_tokens
from .model_dir import OnnxManifest, detect_model_kind, load_tokenizer, read_generation_defaults
from .onnx_export import ExportReport, export_onnx, quantize_onnx
from .sampling import SamplingParams

__version__ = "0.1.0"  # kept in step with pyproject.toml by scripts/bump_version.py

__all__ = [
    "DecodeBatch",
    "Engine",
    "ExportError",
    "ExportReport",
    "FoundryError",
    "OnnxManifest",
    "OrtEngine",
    "SamplingParams",
    "SequenceState",
    "TextStream",
    "TorchEngine",
    "__version__",
    "detect_model_kind",
    "export_onnx",
    "generate_tokens",
    "quantize_onnx",
    "load_engine",
    "load_tokenizer",
    "read_generation_defaults",
]
