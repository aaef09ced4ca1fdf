"""foundry-data: turn raw text into streaming (MDS) datasets for language-model training.

The public Python surface (used by foundry-train and by users):

- :data:`MANIFEST_NAME`, :class:`DatasetManifest`, :func:`read_manifest`: the typed manifest beside
  ``index.json``.
- :func:`decode_finetuning_sample` / :class:`FinetuningSample`: fine-tuning samples as model
  inputs and labels (``-100`` on prompt tokens).
- :data:`PRETRAINING_COLUMNS` / :data:`FINETUNING_COLUMNS`: the MDS column layouts.
- :func:`shard_file_matches` / :func:`preferred_hash`: check a shard file against the hashes its
  ``index.json`` stores (what ``inspect`` checks; foundry-train checks every shard it opens).
- :class:`FoundryError`: a user error (bad input); its message says what to fix.

The conversions themselves are run through the ``foundry-data`` command (``foundry_data.cli``).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from foundry_data.errors import USER_ERROR_ATTRIBUTE, FoundryError, user_error_message

if TYPE_CHECKING:
    from foundry_data.finetuning_format import (
        FINETUNING_COLUMNS,
        IGNORE_INDEX,
        FinetuningSample,
        decode_finetuning_sample,
    )
    from foundry_data.locations import location_kind
    from foundry_data.manifest import (
        MANIFEST_NAME,
        DatasetManifest,
        FinetuningInfo,
        SeparatorInfo,
        SourceInfo,
        read_manifest,
    )
    from foundry_data.shard_hashes import preferred_hash, shard_file_matches

try:
    __version__ = version("foundry-data")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

PRETRAINING_COLUMNS: dict[str, str] = {"tokens": "ndarray:int32"}
"""MDS columns of a pretraining dataset: exactly ``seq_len`` int32 token ids per sample."""

# Imported on first use, so that conversion worker processes (which import this package to reach
# their own module) start without numpy and pydantic.
_LAZY = {
    "FINETUNING_COLUMNS": "foundry_data.finetuning_format",
    "IGNORE_INDEX": "foundry_data.finetuning_format",
    "FinetuningSample": "foundry_data.finetuning_format",
    "decode_finetuning_sample": "foundry_data.finetuning_format",
    "MANIFEST_NAME": "foundry_data.manifest",
    "DatasetManifest": "foundry_data.manifest",
    "FinetuningInfo": "foundry_data.manifest",
    "SeparatorInfo": "foundry_data.manifest",
    "SourceInfo": "foundry_data.manifest",
    "read_manifest": "foundry_data.manifest",
    "preferred_hash": "foundry_data.shard_hashes",
    "shard_file_matches": "foundry_data.shard_hashes",
    "location_kind": "foundry_data.locations",
}

__all__ = [
    "FINETUNING_COLUMNS",
    "IGNORE_INDEX",
    "MANIFEST_NAME",
    "PRETRAINING_COLUMNS",
    "DatasetManifest",
    "FinetuningInfo",
    "FinetuningSample",
    "FoundryError",
    "SeparatorInfo",
    "SourceInfo",
    "USER_ERROR_ATTRIBUTE",
    "__version__",
    "decode_finetuning_sample",
    "location_kind",
    "preferred_hash",
    "read_manifest",
    "shard_file_matches",
    "user_error_message",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'foundry_data' has no attribute {name!r}")
