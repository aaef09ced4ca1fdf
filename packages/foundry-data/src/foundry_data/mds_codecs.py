"""Compressions and hashes of MDS shard files, under the names streaming gives them.

The names, levels, defaults and libraries are streaming's (``zstd`` is the ``zstd`` package at
level 3, ``gz`` is gzip at level 9, ``xxh64`` is the ``xxhash`` package, ``sha1`` is hashlib's,
...), so a shard compressed or hashed here has exactly the bytes and digests streaming's own
writer gives it; ``tests/test_mds_writer.py`` checks every name against streaming. They live here
rather than being imported from streaming because importing any part of streaming imports torch
and torchvision, seconds of CPU that a conversion on a CPU data box would spend on nothing.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = [
    "compress",
    "compression_extension",
    "compression_names",
    "file_hash",
    "hash_names",
    "path_hash",
]


def _zstd(data: bytes, level: int) -> bytes:
    import zstd

    return zstd.compress(data, level)


def _gzip(data: bytes, level: int) -> bytes:
    return gzip.compress(data, level)  # the header holds the time: no two runs agree byte for byte


def _bzip2(data: bytes, level: int) -> bytes:
    return bz2.compress(data, level)


def _brotli(data: bytes, level: int) -> bytes:
    import brotli

    return brotli.compress(data, quality=level)


def _snappy(data: bytes, level: int) -> bytes:
    import snappy

    return snappy.compress(data)  # no levels


@dataclass(frozen=True)
class _Family:
    """One compression library: its file extension, levels and default level."""

    extension: str
    levels: tuple[int, ...]
    default: int
    function: Callable[[bytes, int], bytes]


_FAMILIES = {
    family.extension: family
    for family in (
        _Family("br", tuple(range(12)), 11, _brotli),
        _Family("bz2", tuple(range(1, 10)), 9, _bzip2),
        _Family("gz", tuple(range(10)), 9, _gzip),
        _Family("snappy", (), 0, _snappy),
        _Family("zstd", tuple(range(1, 23)), 3, _zstd),
    )
}


def _parse(name: str) -> tuple[_Family, int]:
    """``zstd`` -> (zstd, 3); ``zstd:7`` -> (zstd, 7). Raises ValueError for unknown names."""
    if name not in compression_names():
        raise ValueError(f"{name!r} is not a compression streaming knows")
    extension, _, level = name.partition(":")
    family = _FAMILIES[extension]
    return family, int(level) if level else family.default


@cache
def compression_names() -> frozenset[str]:
    """Every compression name: each family alone and as ``family:level``."""
    names: set[str] = set()
    for family in _FAMILIES.values():
        names.add(family.extension)
        names.update(f"{family.extension}:{level}" for level in family.levels)
    return frozenset(names)


def compression_extension(name: str) -> str:
    """The file extension of a compression (``zstd:7`` -> ``zstd``)."""
    return _parse(name)[0].extension


def compress(name: str, data: bytes) -> bytes:
    """``data`` compressed the way streaming compresses a shard with compression ``name``."""
    family, level = _parse(name)
    return family.function(data, level)


@cache
def _hash_functions() -> dict[str, Callable[[bytes], Any]]:
    import xxhash

    functions: dict[str, Callable[[bytes], Any]] = {}
    for name in sorted(hashlib.algorithms_available):
        if hasattr(hashlib, name) and not name.startswith("shake_"):
            functions[name] = getattr(hashlib, name)
    available: set[str] = xxhash.algorithms_available
    for name in sorted(available):
        functions[name] = getattr(xxhash, name)
    return functions


def hash_names() -> frozenset[str]:
    """Every hash name: hashlib's (fixed-length ones) and xxhash's."""
    return frozenset(_hash_functions())


def file_hash(name: str, data: bytes) -> str:
    """The hex digest of ``data`` by hash ``name``. Raises ValueError for unknown names."""
    function = _hash_functions().get(name)
    if function is None:
        raise ValueError(f"{name!r} is not a hash streaming knows")
    return str(function(data).hexdigest())


def path_hash(name: str, path: str, chunk_bytes: int = 16 << 20) -> str:
    """The hex digest of the file at ``path`` by hash ``name``, read in chunks (memory stays
    ``chunk_bytes`` whatever the shard's size). Raises ValueError for unknown names."""
    function = _hash_functions().get(name)
    if function is None:
        raise ValueError(f"{name!r} is not a hash streaming knows")
    state = function()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            state.update(block)
    return str(state.hexdigest())
