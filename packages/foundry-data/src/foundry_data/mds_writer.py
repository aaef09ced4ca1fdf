"""Writing MDS shards: the files streaming's ``MDSWriter`` writes, byte for byte.

A shard holds ``[num_samples: u32][offsets: (num_samples + 1) x u32][config JSON][samples]``;
each sample is ``[sizes of its variable-size columns: u32 each][column bytes, columns sorted by
name]``. Shards are compressed and hashed as the config says, and ``index.json`` lists them. The
columns foundry-data writes are supported: ``ndarray`` (with or without a fixed dtype and shape)
and ``json``.

Why not streaming's writer: importing any part of streaming imports torch and torchvision, which
costs seconds of CPU per conversion (more than a fifth of converting 100 MB on two cores) for
nothing a conversion uses. ``tests/test_mds_writer.py`` checks that this writer and streaming's
give identical files, and streaming reads what this writer writes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from foundry_data.mds_codecs import compress, compression_extension, file_hash

__all__ = ["INDEX_NAME", "MDSShardWriter"]

INDEX_NAME = "index.json"
_SAMPLE_OVERHEAD = 4  # its offset in the shard header
_VALUE_DTYPES = {
    "uint8": 8,
    "int8": 9,
    "uint16": 16,
    "int16": 17,
    "float16": 18,
    "uint32": 32,
    "int32": 33,
    "float32": 34,
    "uint64": 64,
    "int64": 65,
    "float64": 66,
}
_SHAPE_DTYPES = (("uint8", 0), ("uint16", 1), ("uint32", 2), ("uint64", 3))
"""Shape dtypes, smallest first, with their codes: a shape is stored in the first that holds it."""
_MAX_CACHED_HEADS = 256


class _NDArrayColumn:
    """``ndarray[:DTYPE[:D0,D1,...]]``: dtype and shape are stored per sample unless fixed."""

    def __init__(self, spec: str) -> None:
        args = spec.split(":")[1:]
        self.dtype = args[0] if args else None
        self.shape = tuple(int(d) for d in args[1].split(",")) if len(args) > 1 else None
        if self.dtype is not None and self.dtype not in _VALUE_DTYPES:
            raise ValueError(f"MDS column encoding {spec!r}: unsupported dtype {self.dtype!r}")
        self.size = (
            int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
            if self.dtype is not None and self.shape is not None
            else None
        )

        self._heads: dict[tuple[np.dtype[Any], tuple[int, ...]], bytes] = {}

    def encode(self, value: np.ndarray) -> bytes:
        key = (value.dtype, value.shape)
        head = self._heads.get(key)
        if head is None:
            head = self._head(value)
            if len(self._heads) < _MAX_CACHED_HEADS:
                self._heads[key] = head
        return head + value.tobytes()

    def _head(self, value: np.ndarray) -> bytes:
        """What is stored before the values: the dtype and shape unless fixed (both depend only
        on the array's dtype and shape, so the writer keeps them for the next array alike)."""
        parts: list[bytes] = []
        code = _VALUE_DTYPES.get(value.dtype.name)
        if code is None:
            raise ValueError(f"MDS ndarray column: unsupported dtype {value.dtype.name}")
        if self.dtype is None:
            parts.append(bytes([code]))
        elif value.dtype.name != self.dtype:
            raise ValueError(f"MDS ndarray column: dtype {value.dtype.name}, not {self.dtype}")
        if value.size == 0:
            raise ValueError("MDS ndarray column: an array with no elements cannot be stored")
        if self.shape is None:
            parts += _shape_bytes(value.shape)
        elif value.shape != self.shape:
            raise ValueError(f"MDS ndarray column: shape {value.shape}, not {self.shape}")
        return b"".join(parts)


def _shape_bytes(shape: tuple[int, ...]) -> list[bytes]:
    """``[ndim << 2 | shape dtype code][shape in the smallest unsigned dtype that holds it]``."""
    if not 1 <= len(shape) < 64:
        raise ValueError(f"MDS ndarray column: {len(shape)} axes (1 to 63 can be stored)")
    largest = max(shape)
    dtype, code = next((d, c) for d, c in _SHAPE_DTYPES if largest <= np.iinfo(d).max)
    return [bytes([len(shape) << 2 | code]), np.array(shape, np.int64).astype(dtype).tobytes()]


class _JSONColumn:
    size = None

    def encode(self, value: Any) -> bytes:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        return json.dumps(value).encode("utf-8")


def _column(spec: str) -> _NDArrayColumn | _JSONColumn:
    if spec == "json":
        return _JSONColumn()
    if spec == "ndarray" or spec.startswith("ndarray:"):
        return _NDArrayColumn(spec)
    raise ValueError(f"MDS column encoding {spec!r} is not one foundry-data writes")


class MDSShardWriter:
    """Writes samples to ``shard.NNNNN.mds[.EXT]`` files in ``out`` and ``index.json`` at the
    end, exactly as ``streaming.MDSWriter(out=out, columns=..., compression=..., hashes=...,
    size_limit=...)`` does.

    ``on_shard(basename)`` is called after each shard file is complete (to upload it).
    ``shards``: index entries of shards already in ``out`` (a resumed conversion); the writer
    goes on with the next shard number.
    """

    def __init__(
        self,
        out: Path,
        *,
        columns: Mapping[str, str],
        compression: str | None,
        hashes: list[str],
        size_limit: int | None,
        on_shard: Callable[[str], None] | None = None,
        shards: list[dict[str, Any]] | None = None,
    ) -> None:
        if hashes != sorted(hashes):
            raise ValueError(f"MDS hashes must be sorted, got {hashes}")
        names = sorted(columns)
        self._columns = [(name, _column(columns[name])) for name in names]
        self.shards: list[dict[str, Any]] = list(shards or [])
        self.config: dict[str, Any] = {
            "version": 2,
            "format": "mds",
            "compression": compression,
            "hashes": list(hashes),
            "size_limit": size_limit,
            "column_names": names,
            "column_encodings": [columns[name] for name in names],
            "column_sizes": [column.size for _, column in self._columns],
        }
        for shard in self.shards:
            if any(shard.get(key) != value for key, value in self.config.items()):
                raise ValueError(f"shard {shard.get('raw_data')} was written with another config")
        self._config_bytes = json.dumps(self.config, sort_keys=True).encode("utf-8")
        num_sizes = sum(column.size is None for _, column in self._columns)
        self._sizes = struct.Struct(f"={num_sizes}I")  # native-order uint32s, as numpy's
        self.out = out
        self._on_shard = on_shard
        self._samples: list[bytes] = []
        self._shard_bytes = self._empty_shard_bytes()
        out.mkdir(parents=True, exist_ok=True)

    def _empty_shard_bytes(self) -> int:
        return 4 + 4 + len(self._config_bytes)  # sample count, first offset, config

    def encode(self, sample: Mapping[str, Any]) -> bytes:
        """One sample's bytes: the sizes of its variable-size columns, then every column."""
        sizes: list[int] = []
        data: list[bytes] = []
        for name, column in self._columns:
            datum = column.encode(sample[name])
            if column.size is None:
                sizes.append(len(datum))
            elif len(datum) != column.size:
                raise ValueError(f"MDS column {name!r}: {len(datum)} bytes, not {column.size}")
            data.append(datum)
        return b"".join([self._sizes.pack(*sizes), *data])

    def write(self, sample: Mapping[str, Any]) -> None:
        """Add a sample; the shard is written out first if the sample would not fit in it."""
        data = self.encode(sample)
        size = len(data) + _SAMPLE_OVERHEAD
        limit = self.config["size_limit"]
        if limit and limit < self._shard_bytes + size:
            self._flush_shard()  # as streaming does, even when it holds no sample yet
        self._samples.append(data)
        self._shard_bytes += size

    def finish(self) -> None:
        """Write the last shard and ``index.json``."""
        if self._samples:
            self._flush_shard()
        with open(self.out / INDEX_NAME, "w") as f:
            json.dump({"version": 2, "shards": self.shards}, f, sort_keys=True)

    def _flush_shard(self) -> None:
        samples, self._samples = self._samples, []
        self._shard_bytes = self._empty_shard_bytes()
        offsets = np.array([0] + [len(s) for s in samples]).cumsum().astype(np.uint32)
        offsets += 4 + len(offsets.tobytes()) + len(self._config_bytes)
        header = np.uint32(len(samples)).tobytes() + offsets.tobytes() + self._config_bytes
        raw = b"".join([header, *samples])
        del samples
        raw_name = f"shard.{len(self.shards):05}.mds"
        raw_info = self._file_info(raw, raw_name)
        compression: str | None = self.config["compression"]
        if compression:
            zip_name = f"{raw_name}.{compression_extension(compression)}"
            data = compress(compression, raw)
            zip_info: dict[str, Any] | None = self._file_info(data, zip_name)
        else:
            zip_name, data, zip_info = None, raw, None
        with open(self.out / (zip_name or raw_name), "wb") as f:
            f.write(data)
        self.shards.append(
            {"samples": len(offsets) - 1, "raw_data": raw_info, "zip_data": zip_info, **self.config}
        )
        if self._on_shard is not None:
            self._on_shard(zip_name or raw_name)

    def _file_info(self, data: bytes, basename: str) -> dict[str, Any]:
        hashes = {name: file_hash(name, data) for name in self.config["hashes"]}
        return {"basename": basename, "bytes": len(data), "hashes": hashes}
