"""Checking MDS shard files against the hashes ``index.json`` stores for them.

``foundry-data inspect`` picks the hash it checks with :func:`preferred_hash`; foundry-train
checks each shard with :func:`shard_file_matches` the first time a training process opens it
(streaming itself only checks shards it has just downloaded or decompressed, and only when asked).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from foundry_data.mds_codecs import hash_names, path_hash

__all__ = ["preferred_hash", "shard_file_matches"]


def preferred_hash(hashes: Iterable[str]) -> str | None:
    """The stored hash to verify a shard with: xxh64 (fast) when present, else the first one
    this machine can compute; None when there is none."""
    names = [name for name in hashes if name in hash_names()]
    if "xxh64" in names:
        return "xxh64"
    return names[0] if names else None


def shard_file_matches(path: str, hashes: Mapping[str, str]) -> tuple[str, bool] | None:
    """(hash name, whether the file at ``path`` has the stored digest), or None when
    ``hashes`` (one shard file's ``hashes`` in ``index.json``) holds no hash to check with."""
    name = preferred_hash(hashes)
    if name is None:
        return None
    return name, path_hash(name, path) == hashes[name]
