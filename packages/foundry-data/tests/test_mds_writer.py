"""foundry-data's MDS writer writes the files streaming's MDSWriter writes, byte for byte."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from foundry_data.mds_codecs import compress, compression_names, file_hash, hash_names
from foundry_data.mds_writer import MDSShardWriter

COLUMNS = {
    "tokens": "ndarray:int32",
    "turns": "json",
    "fixed": "ndarray:int64:2,3",
    "any": "ndarray",
}


def _samples() -> list[dict]:
    """Samples of every column kind; array lengths need 8-, 16- and 32-bit shape fields."""
    rng = np.random.default_rng(7)
    samples = []
    for i, length in enumerate([1, 255, 256, 3, 65535, 65536, 40, 700, 2, 90]):
        samples.append(
            {
                "tokens": rng.integers(0, 50_000, size=length, dtype=np.int32),
                "turns": [{"input_ids": [i, 2, 3], "labels": [4] * i}, {"note": "é 東京 🎉"}],
                "fixed": np.arange(6, dtype=np.int64).reshape(2, 3) * i,
                "any": rng.integers(0, 200, size=(i % 3 + 1, 2)).astype(
                    np.float16 if i % 2 else np.uint8
                ),
            }
        )
    return samples


def _write_both(tmp_path: Path, compression: str | None, hashes: list[str], size_limit: int):
    from streaming import MDSWriter

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    writer = MDSShardWriter(
        ours, columns=COLUMNS, compression=compression, hashes=hashes, size_limit=size_limit
    )
    reference = MDSWriter(
        out=str(theirs),
        columns=COLUMNS,
        compression=compression,
        hashes=hashes,
        size_limit=size_limit,
    )
    for sample in _samples():
        writer.write(sample)
        reference.write(sample)
    writer.finish()
    reference.finish()
    return ours, theirs


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("compression", "hashes", "size_limit"),
    [
        ("zstd", ["sha1", "xxh64"], 1 << 26),  # foundry-data's defaults: one shard
        ("zstd:7", ["md5", "xxh3_128"], 200_000),  # several shards
        ("bz2:3", [], 100_000),
        ("br:4", ["sha256"], 300_000),
        ("snappy", ["xxh32"], 300_000),
        (None, ["sha1"], 1 << 10),  # every sample exceeds the limit: streaming's empty shards too
    ],
)
def test_same_files_as_streaming(tmp_path, compression, hashes, size_limit):
    ours, theirs = _write_both(tmp_path, compression, hashes, size_limit)
    mine, reference = _files(ours), _files(theirs)
    assert list(mine) == list(reference)
    assert len(reference) > (2 if size_limit < 1 << 20 else 1)
    for name, data in reference.items():
        assert mine[name] == data, f"{name} differs from streaming's"


def test_gzip_shards_match_but_for_the_time_in_their_header(tmp_path):
    ours, theirs = _write_both(tmp_path, "gz:1", ["sha1"], 250_000)
    mine, reference = _files(ours), _files(theirs)
    assert list(mine) == list(reference)
    for name, data in reference.items():
        if name.endswith(".gz"):
            assert gzip.decompress(mine[name]) == gzip.decompress(data)
            assert mine[name][:4] + mine[name][8:] == data[:4] + data[8:]  # bytes 4-7: mtime
    index = json.loads(mine["index.json"])
    for shard in index["shards"]:
        assert shard["raw_data"] == next(
            s["raw_data"]
            for s in json.loads(reference["index.json"])["shards"]
            if s["raw_data"]["basename"] == shard["raw_data"]["basename"]
        )


def test_streaming_reads_what_it_writes(tmp_path):
    from streaming import StreamingDataset

    ours, _ = _write_both(tmp_path, "zstd", ["sha1", "xxh64"], 200_000)
    dataset = StreamingDataset(local=str(ours), shuffle=False, batch_size=1, validate_hash="sha1")
    expected = _samples()
    assert dataset.num_samples == len(expected)
    for i, want in enumerate(expected):
        got = dataset[i]
        np.testing.assert_array_equal(got["tokens"], want["tokens"])
        np.testing.assert_array_equal(got["fixed"], want["fixed"])
        np.testing.assert_array_equal(got["any"], want["any"])
        assert got["any"].dtype == want["any"].dtype
        assert got["turns"] == want["turns"]


def test_names_and_codecs_are_streamings():
    from streaming.base.compression import compress as streaming_compress
    from streaming.base.compression import get_compressions
    from streaming.base.hashing import get_hash, get_hashes

    assert compression_names() == get_compressions()
    assert hash_names() == get_hashes()
    data = np.arange(5000, dtype=np.int32).tobytes() * 3
    for name in sorted(compression_names()):
        if not name.startswith("gz"):  # gzip stores the time: compared above, ignoring it
            assert compress(name, data) == streaming_compress(name, data), name
    for name in sorted(hash_names()):
        assert file_hash(name, data) == get_hash(name, data), name


def test_bad_column_or_value_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not one foundry-data writes"):
        MDSShardWriter(
            tmp_path / "a", columns={"x": "pkl"}, compression=None, hashes=[], size_limit=None
        )
    writer = MDSShardWriter(
        tmp_path / "b",
        columns={"tokens": "ndarray:int32"},
        compression=None,
        hashes=[],
        size_limit=None,
    )
    with pytest.raises(ValueError, match="dtype int64, not int32"):
        writer.write({"tokens": np.zeros(3, dtype=np.int64)})
    with pytest.raises(ValueError, match="no elements"):
        writer.write({"tokens": np.zeros(0, dtype=np.int32)})
    with pytest.raises(ValueError, match="not a compression"):
        compress("zstd:99", b"x")
