"""Model and data locations: a local path, a Hugging Face Hub id, or a path that is missing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

__all__ = ["LocationKind", "PATH_SUFFIXES", "location_kind"]

LocationKind = Literal["path", "hub", "missing"]

# File extensions that mark a name as a file on this machine, never a Hugging Face Hub id.
PATH_SUFFIXES = frozenset(
    {".txt", ".json", ".jsonl", ".parquet", ".csv", ".tsv", ".arrow", ".gz", ".zst", ".bz2",
     ".xz", ".yaml", ".yml", ".md", ".bin", ".pt", ".pth", ".safetensors", ".model", ".onnx"}
)  # fmt: skip


def location_kind(spec: str) -> LocationKind:
    """What ``spec`` names, by the one rule every command that takes a model or data source uses.

    - an existing local path is a path (``"path"``);
    - a name that looks like a file or folder (it starts with ``.``, ``/``, ``~`` or ``\\``, holds
      more than one ``/``, or ends in a file extension such as ``.jsonl``, ``.parquet`` or
      ``.csv``) and does not exist is a missing path (``"missing"``): fail at once, never ask
      the Hub;
    - anything else (``org/name`` such as ``mosaicml/mpt-7b``, or a bare name such as ``gpt2``)
      is a Hugging Face Hub id (``"hub"``).
    """
    if Path(spec).expanduser().exists():
        return "path"
    looks_like_path = (
        spec.startswith((".", "/", "~", "\\"))
        or spec.count("/") > 1
        or (os.sep != "/" and os.sep in spec)
        or Path(spec).suffix.lower() in PATH_SUFFIXES
    )
    return "missing" if looks_like_path else "hub"
