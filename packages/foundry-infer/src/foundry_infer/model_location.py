"""Where a MODEL argument points: a local directory, or a Hugging Face Hub id.

One rule, as in the other Foundry commands: an existing path is a path; something that looks like
a path (starts with `.`, `/`, `~`, has more than one `/` or a file extension) and does not exist is
a missing path, refused at once; anything else (`org/name`, `gpt2`) is a hub id, fetched into (or
read from) the local hub cache as transformers does.
"""

from __future__ import annotations

from pathlib import Path

from .errors import FoundryError

__all__ = ["resolve_model_location"]

_FILE_SUFFIXES = {".json", ".bin", ".safetensors", ".onnx", ".pt", ".gguf", ".yaml", ".txt"}


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~", "\\"))
        or spec.count("/") > 1
        or Path(spec).suffix.lower() in _FILE_SUFFIXES
    )


def resolve_model_location(spec: str) -> str:
    """A local directory for ``spec``: itself when it exists, else the hub snapshot of the id."""
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    if _looks_like_path(spec) or not spec.strip():
        raise FoundryError(
            f"model directory {spec} does not exist. Give a Hugging Face model directory "
            "(config.json + weights + tokenizer), an ONNX directory written by `foundry-infer "
            "export-onnx`, or a Hugging Face Hub id such as org/name."
        )
    from huggingface_hub import constants, snapshot_download

    try:
        return str(snapshot_download(spec))
    except Exception as exc:  # offline, unknown or gated repository, network errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        offline = (
            " HF_HUB_OFFLINE is set, so nothing is downloaded." if constants.HF_HUB_OFFLINE else ""
        )
        raise FoundryError(
            f"{spec} is no local directory, so it was taken as a Hugging Face Hub id, and it "
            f"could not be fetched ({type(exc).__name__}: {first}).{offline} It is not in the "
            f"local hub cache ({constants.HF_HUB_CACHE}): download it on a machine that can reach "
            f"the Hub (`hf download {spec}`) and copy the cache, or give a local directory."
        ) from None
