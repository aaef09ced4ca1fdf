"""Where a model (or tokenizer) comes from: a local path or a Hugging Face hub id.

One rule, as transformers applies it but failing early: an existing local path is a path; a
name of the form ``org/name`` that is no local path is a hub id (loaded through transformers,
from the local hub cache when offline); anything that looks like a file or folder (starts with
``.``, ``/`` or ``~``, has a file extension, or has more than one ``/``) and does not exist is a
missing path, reported at once instead of being looked up on the hub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from foundry_eval.errors import FoundryError

__all__ = ["describe_hub_error", "model_source"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# A file extension: a dot and a letter-led word at the end ("model.safetensors", "eval.yaml"),
# not version numbers inside hub names ("Qwen2.5-0.5B", "TinyLlama-1.1B-Chat-v1.0").
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,11}$")


def _looks_like_path(value: str) -> bool:
    return (
        value.startswith((".", "/", "~", "\\"))
        or bool(_EXTENSION.search(value))
        or value.count("/") > 1
    )


def model_source(value: str, what: str = "model") -> Literal["path", "hub", "url"]:
    """``"path"`` for an existing local path, ``"hub"`` for an ``org/name`` hub id, ``"url"`` for
    an object-store URL; raises FoundryError for a missing path or a name that is neither."""
    if "://" in value:
        return "url"
    if Path(value).expanduser().exists():
        return "path"
    if _looks_like_path(value) or not _HUB_ID.match(value):
        hint = "" if _looks_like_path(value) else " (a Hugging Face hub id is written org/name)"
        raise FoundryError(
            f"{what} {value} does not exist{hint}. Give an existing local directory or a hub id "
            "such as mosaicml/mpt-7b."
        )
    return "hub"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def describe_hub_error(repo_id: str, what: str, exc: BaseException) -> str | None:
    """A one-paragraph explanation when loading hub id ``repo_id`` failed because it is not
    cached and the hub is unreachable (offline) or has no such repository; None otherwise."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    if any(isinstance(e, GatedRepoError | RepositoryNotFoundError) for e in chain):
        return (
            f"the Hugging Face hub has no {what} {repo_id} you can read (it may be private or "
            "gated: log in with `hf auth login`). Check the id, or give a local directory."
        )
    offline = any(isinstance(e, LocalEntryNotFoundError | OfflineModeIsEnabled) for e in chain)
    if offline or names & {"ConnectError", "ConnectionError", "ConnectTimeout", "gaierror"}:
        flag = os.environ.get("HF_HUB_OFFLINE") or constants.HF_HUB_OFFLINE
        why = "HF_HUB_OFFLINE is set" if flag else "the hub could not be reached; are you offline?"
        return (
            f"{what} {repo_id} is a Hugging Face hub id that is not in the local hub cache "
            f"({constants.HF_HUB_CACHE}) and {why}. Download it once while online "
            f"(hf download {repo_id}), or give a local directory."
        )
    return None
