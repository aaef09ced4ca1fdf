"""What a MODEL argument points at: a Hugging Face directory or a Foundry ONNX directory.

An ONNX directory written by ``foundry-infer export-onnx`` holds ``model.onnx`` (and maybe
``model.onnx.data``), ``foundry_onnx.json`` (the graph's signature, see :class:`OnnxManifest`),
the tokenizer and ``generation_config.json``, so it is usable on a host that has only it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from .errors import FoundryError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "ONNX_MANIFEST_NAME",
    "ONNX_MODEL_NAME",
    "ModelKind",
    "OnnxManifest",
    "detect_model_kind",
    "load_tokenizer",
    "read_generation_defaults",
    "GenerationDefaults",
]

ONNX_MANIFEST_NAME = "foundry_onnx.json"
ONNX_MODEL_NAME = "model.onnx"
ONNX_FORMAT_VERSION = 1
ModelKind = Literal["hf", "onnx"]

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class OnnxManifest:
    """The signature of an exported decoder graph with its key/value cache.

    Inputs: ``input_ids`` (batch, seq) int64, ``attention_mask`` (batch, past + seq) int64,
    ``position_ids`` (batch, seq) int64 when ``uses_position_ids``, and for each layer
    ``past_key_values.{i}.key`` / ``.value`` (batch, kv_heads, past, head_dim). Outputs:
    ``logits`` (batch, vocab) for the last position and ``present.{i}.key`` / ``.value``
    (batch, kv_heads, past + seq, head_dim).
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int | None
    uses_position_ids: bool
    model_type: str
    quantization: Literal["none", "int8"] = "none"
    dtype: Literal["float32", "float16"] = "float32"  # of the weights, cache and logits
    source: str = ""
    max_abs_diff: float | None = None
    versions: dict[str, str] = field(default_factory=dict[str, str])
    format_version: int = ONNX_FORMAT_VERSION

    def write(self, directory: Path) -> None:
        (directory / ONNX_MANIFEST_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> OnnxManifest:
        path = directory / ONNX_MANIFEST_NAME
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            return cls(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise FoundryError(
                f"cannot read the ONNX manifest {path}: {exc}. Re-export the model with "
                "`foundry-infer export-onnx MODEL_DIR OUT`."
            ) from exc


def detect_model_kind(path: str | Path) -> ModelKind:
    """Say whether ``path`` is a Foundry ONNX directory or a Hugging Face model directory."""
    directory = Path(path)
    if not directory.is_dir():
        raise FoundryError(
            f"model directory {directory} does not exist. Give a Hugging Face model directory "
            "(config.json + weights + tokenizer) or an ONNX directory written by "
            "`foundry-infer export-onnx`."
        )
    if (directory / ONNX_MANIFEST_NAME).is_file() and (directory / ONNX_MODEL_NAME).is_file():
        return "onnx"
    if (directory / "config.json").is_file() and any(
        (directory / name).is_file() for name in _WEIGHT_FILES
    ):
        return "hf"
    raise FoundryError(
        f"{directory} is neither a Hugging Face model directory (config.json and "
        f"{' or '.join(_WEIGHT_FILES)}) nor an ONNX directory ({ONNX_MODEL_NAME} and "
        f"{ONNX_MANIFEST_NAME}). Point MODEL at an exported model directory."
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in a model directory (HF or ONNX)."""
    from transformers import AutoTokenizer

    try:
        # transformers leaves AutoTokenizer.from_pretrained unannotated (Unknown).
        return cast(
            "PreTrainedTokenizerBase",
            AutoTokenizer.from_pretrained(str(path)),  # pyright: ignore[reportUnknownMemberType]
        )
    except (OSError, ValueError) as exc:
        raise FoundryError(
            f"cannot load a tokenizer from {path}: {exc}. Save the tokenizer into the model "
            "directory (tokenizer.save_pretrained(dir))."
        ) from exc


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampling defaults and stop tokens from a directory's generation_config.json."""

    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int | None


def _model_config_tokens(config_path: Path) -> dict[str, Any]:
    """``eos_token_id`` and ``pad_token_id`` of a config.json (its text config's, for a
    multimodal one), where set."""
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return {}  # no readable config.json: the tokenizer's tokens
    if not isinstance(config, dict):
        return {}
    top = cast("dict[str, Any]", config)
    text: Any = top.get("text_config")
    sources = [top, cast("dict[str, Any]", text)] if isinstance(text, dict) else [top]
    out: dict[str, Any] = {}
    for key in ("eos_token_id", "pad_token_id"):
        for source in sources:
            if source.get(key) is not None:
                out[key] = source[key]
                break
    return out


def read_generation_defaults(path: str | Path, tokenizer: Any) -> GenerationDefaults:
    """Read generation_config.json (when present) and fill gaps from the tokenizer."""
    raw: dict[str, Any] = {}
    gen_path = Path(path) / "generation_config.json"
    if gen_path.is_file():
        try:
            raw = json.loads(gen_path.read_text())
        except ValueError as exc:
            raise FoundryError(f"{gen_path} is not valid JSON ({exc}). Fix or delete it.") from exc
    else:
        # no generation_config.json: the stop and pad tokens of config.json, as transformers
        # (and export-onnx, through GenerationConfig.from_model_config) use them
        raw = _model_config_tokens(Path(path) / "config.json")
    eos_ids = _token_ids(raw.get("eos_token_id", tokenizer.eos_token_id))
    pad = raw.get("pad_token_id", tokenizer.pad_token_id)
    return GenerationDefaults(
        eos_token_ids=eos_ids,
        pad_token_id=int(pad) if isinstance(pad, int) else None,
        do_sample=bool(raw.get("do_sample", False)),
        temperature=float(raw.get("temperature") or 1.0),
        top_p=float(raw.get("top_p") or 1.0),
        top_k=int(raw.get("top_k") or 0),
        max_new_tokens=raw.get("max_new_tokens"),
    )


def _token_ids(value: Any) -> tuple[int, ...]:
    """A JSON token id field (one id, a list of ids, or null) as a tuple of ids."""
    items = cast("list[Any]", value) if isinstance(value, list) else [value]
    return tuple(int(t) for t in items if t is not None)
