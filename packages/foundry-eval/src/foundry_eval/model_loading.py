"""Loading an HF causal LM directory (any architecture transformers knows, Foundry exports too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from foundry_eval.config import ModelConfig
from foundry_eval.errors import FoundryError
from foundry_eval.model_source import describe_hub_error, model_source

__all__ = ["check_model_sources", "load_model", "load_tokenizer", "resolve_device"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda:0 when a GPU is visible, else cpu; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise FoundryError(f"unknown device '{device}'. Use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FoundryError(
            f"device '{device}' was asked for but no CUDA GPU is visible. Use --device cpu."
        )
    return dev


def check_model_sources(cfg: ModelConfig) -> None:
    """Fail at once on a model or tokenizer path that does not exist (hub ids pass)."""
    model_source(cfg.path, "model")
    if cfg.tokenizer:
        model_source(cfg.tokenizer, "tokenizer")


def _load_error(source: str, what: str, exc: Exception, fix: str) -> FoundryError:
    """A FoundryError for a failed from_pretrained: the hub's reason for hub ids, else ``fix``."""
    if model_source(source, what) == "hub":
        explained = describe_hub_error(source, what, exc)
        if explained:
            return FoundryError(explained)
    first = (str(exc).splitlines() or [""])[0][:200]
    return FoundryError(
        f"could not load a {what} from {source} ({type(exc).__name__}: {first}). {fix}"
    )


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer of ``model.tokenizer`` (or of the model): a directory or a hub id."""
    from transformers import AutoTokenizer

    source = cfg.tokenizer or cfg.path
    local = model_source(source, "tokenizer") == "path"
    try:
        tok = AutoTokenizer.from_pretrained(
            str(Path(source).expanduser()) if local else source,
            trust_remote_code=cfg.trust_remote_code,
        )
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError for bad dirs
        raise _load_error(
            source,
            "tokenizer",
            exc,
            "Point model.tokenizer (--tokenizer) at a directory with tokenizer files or a hub id.",
        ) from None
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, device: torch.device) -> Any:
    """The model in eval mode, on ``device`` or spread over GPUs with ``device_map``."""
    from transformers import AutoModelForCausalLM

    kind = model_source(cfg.path, "model")
    if kind == "path" and not (Path(cfg.path).expanduser() / "config.json").is_file():
        raise FoundryError(
            f"{cfg.path} is not a Hugging Face model directory (no config.json). "
            "Give the directory written by save_pretrained or foundry-train export-hf."
        )
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.dtype != "auto":
        kwargs["dtype"] = _DTYPES[cfg.dtype]
    elif device.type == "cuda":
        kwargs["dtype"] = "auto"
    else:
        kwargs["dtype"] = torch.float32
    if cfg.device_map:
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise FoundryError(
                "model.device_map needs the accelerate package. Install it with "
                "pip install 'foundry-eval[sharded]'."
            ) from None
        kwargs["device_map"] = cfg.device_map
    try:
        source = str(Path(cfg.path).expanduser()) if kind == "path" else cfg.path
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise _load_error(
            cfg.path,
            "causal LM",
            exc,
            "Check that the directory (or hub repository) holds a complete checkpoint of a causal LM.",
        ) from None
    if not cfg.device_map:
        model = model.to(device)  # pyright: ignore[reportArgumentType]
    model.eval()
    return model
