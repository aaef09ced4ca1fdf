"""Checking the MDS writing options (compression, hashes, shard size) up front."""

from __future__ import annotations

import re

from foundry_data.errors import FoundryError
from foundry_data.mds_codecs import compression_names, hash_names

__all__ = ["DEFAULT_HASHES", "parse_compression", "parse_hashes", "parse_shard_size"]

DEFAULT_HASHES = ["sha1", "xxh64"]
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgKMG]i?[bB]?|[bB])?\s*$")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1 << 10,
    "mi": 1 << 20,
    "gi": 1 << 30,
}


def parse_compression(value: str | None) -> str | None:
    """``zstd`` (default), ``zstd:LEVEL``, ``gz``, ``bz2``, ``br``, ``snappy`` ... or ``none``."""
    if value is None or value.lower() in ("", "none", "off"):
        return None
    if value not in compression_names():
        choices = ", ".join(sorted(compression_names()))
        raise FoundryError(f"unknown --compression {value!r}. Use one of: {choices} (or 'none').")
    return value


def parse_hashes(value: str | None) -> list[str]:
    """A comma-separated list of streaming hash names, or ``none``; returned sorted."""
    if value is None:
        return list(DEFAULT_HASHES)
    if value.lower() in ("", "none", "off"):
        return []
    names = sorted({name.strip() for name in value.split(",") if name.strip()})
    unknown = [name for name in names if name not in hash_names()]
    if unknown:
        raise FoundryError(
            f"unknown --hashes {', '.join(unknown)}. Use names from: "
            f"{', '.join(sorted(hash_names()))} (comma-separated), or 'none'."
        )
    return names


def parse_shard_size(value: str | int) -> int:
    """``67108864``, ``64MiB``, ``64mb``, ``1GB``: the most bytes of samples in one shard."""
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if match is None:
            raise FoundryError(
                f"cannot read --shard-size {value!r}. Give bytes, like 67108864, 64MiB or 64MB."
            )
        number, unit = match.groups()
        unit = (unit or "").lower().rstrip("b")
        size = int(float(number) * _UNITS[unit])
    if not 1 << 10 <= size < 1 << 32:
        raise FoundryError(
            f"--shard-size {value} is out of range: it must be at least 1KiB and below 4GiB "
            "(MDS stores offsets as 32-bit numbers)."
        )
    return size
