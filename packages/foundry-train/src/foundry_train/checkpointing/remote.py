"""Checkpoints in an object store: finding the newest one and fetching it to a local cache.

Composer uploads each checkpoint under the run's ``save_folder`` prefix: a full checkpoint is one
object (``ep0-ba8-rank0.pt``), a sharded one a "folder" of objects (``ep0-ba8/.metadata`` and
the shards). Autoresume and remote ``load_path`` both come here: the checkpoint is downloaded to a
local folder first (each file under a temporary name, renamed when complete), so that it can be
scanned for unsafe pickles before composer opens it, and loaded from local disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from foundry_train.checkpointing.resume import checkpoint_batch, is_complete
from foundry_train.errors import FoundryError

__all__ = ["download_checkpoint", "latest_remote_checkpoint", "remote_cache_dir"]

log = logging.getLogger(__name__)


def remote_cache_dir(uri: str) -> Path:
    """The local folder that holds checkpoints downloaded from ``uri`` (one per save folder)."""
    base = Path(os.environ.get("FOUNDRY_CHECKPOINT_CACHE", Path(tempfile.gettempdir())))
    digest = hashlib.sha1(uri.rstrip("/").encode()).hexdigest()[:12]
    return base / "foundry-train-checkpoints" / digest


def _store(uri: str) -> tuple[Any, str]:
    from composer.utils import maybe_create_object_store_from_uri, parse_uri

    try:
        store = maybe_create_object_store_from_uri(uri)
    except Exception as exc:  # missing boto3 / oci SDK, unknown scheme
        raise FoundryError(f"cannot open the object store of '{uri}': {exc}") from None
    if store is None:
        raise FoundryError(f"'{uri}' is not an object-store URI (s3://bucket/prefix).")
    _, _, path = parse_uri(uri)
    return store, path.strip("/")


def _list(store: Any, prefix: str, uri: str) -> list[str]:
    try:
        return list(store.list_objects(f"{prefix}/" if prefix else ""))
    except Exception as exc:  # botocore errors: unreachable endpoint, credentials, no bucket
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FoundryError(
            f"cannot list the checkpoints under {uri}: {type(exc).__name__}: {text}. Check that "
            "the object store is up, the credentials and, for S3-compatible stores, "
            "S3_ENDPOINT_URL."
        ) from None


def _checkpoints(keys: list[str], prefix: str) -> dict[str, list[str]]:
    """Checkpoint name (``ep0-ba8-rank0.pt`` or ``ep0-ba8``) -> its object keys."""
    found: dict[str, list[str]] = {}
    for key in keys:
        rel = key[len(prefix) + 1 :] if prefix else key
        first, sep, _rest = rel.partition("/")
        if checkpoint_batch(Path(first)) is None:
            continue
        # a full checkpoint is one object; a sharded one is a folder of them
        if bool(sep) != first.endswith(".pt"):
            found.setdefault(first, []).append(key)
    return found


def latest_remote_checkpoint(uri: str) -> str | None:
    """The name of the newest checkpoint under ``uri`` (sharded ones need their metadata)."""
    store, prefix = _store(uri)
    found = _checkpoints(_list(store, prefix, uri), prefix)
    usable = [
        name
        for name, keys in found.items()
        if name.endswith(".pt") or any(k.endswith("/.metadata") for k in keys)
    ]
    if not usable:
        return None
    return max(usable, key=lambda name: checkpoint_batch(Path(name)) or 0)


def download_checkpoint(uri: str, name: str | None = None) -> Path:
    """Fetch checkpoint ``name`` under ``uri`` (or the object/folder ``uri`` itself) to the cache.

    Returns the local path; files already there from an earlier download are reused.
    """
    if name is None:
        uri, _, name = uri.rstrip("/").rpartition("/")
    store, prefix = _store(uri)
    keys = _checkpoints(_list(store, prefix, uri), prefix).get(name)
    if not keys:
        raise FoundryError(f"there is no checkpoint '{name}' under {uri}.")
    local = remote_cache_dir(uri) / name
    for key in keys:
        rel = key[len(prefix) + 1 :] if prefix else key
        target = local.parent / rel
        if target.is_file() and target.stat().st_size == store.get_object_size(key):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            store.download_object(key, str(tmp), overwrite=True)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise FoundryError(
                f"cannot download {uri}/{rel}: {type(exc).__name__}: {exc}"
            ) from None
        os.replace(tmp, target)
    if not is_complete(local):
        if local.is_dir():
            shutil.rmtree(local, ignore_errors=True)
        else:
            local.unlink(missing_ok=True)
        raise FoundryError(
            f"the checkpoint {uri}/{name} is incomplete or corrupt (downloaded to {local}); "
            "resume from an earlier one with load_path."
        )
    log.info("downloaded checkpoint %s/%s to %s", uri, name, local)
    return local
