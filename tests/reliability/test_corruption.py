"""A shard with flipped bytes must fail its hash check, with an error that names the shard.

foundry-data writes sha1 and xxh64 hashes of every shard into index.json (its default
``--hashes``). Here 16 bytes in the middle of the third shard of a real dataset are inverted
(raw shards and zstd-compressed ones), and the sample stored in that shard is read with
``foundry-data inspect``: it must be refused with exit status 2 and an ``error:`` paragraph
naming the shard and the failed check, not decoded into garbage tokens or a traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

CORRUPT_SHARD = 2


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_copy(dataset: Path, out: Path) -> tuple[str, int]:
    """Copy ``dataset`` to ``out`` and corrupt one shard: (its file name, a sample inside it)."""
    shutil.copytree(dataset, out)
    shards = json.loads((out / "index.json").read_text())["shards"]
    assert len(shards) > CORRUPT_SHARD, "the fixture dataset needs more shards"
    shard = shards[CORRUPT_SHARD]
    name = (shard.get("zip_data") or shard["raw_data"])["basename"]
    _flip_bytes(out / name)
    first = sum(s["samples"] for s in shards[:CORRUPT_SHARD])
    return name, first + shard["samples"] // 2


@pytest.fixture(params=["none", "zstd"])
def corrupted(request, tmp_path: Path, pretrain_dir: Path, corpus_file: Path, tokenizer_dir):
    if request.param == "none":
        source = pretrain_dir
    else:
        from foundry_data.cli import main

        source = tmp_path / "zstd"
        args = ["convert", str(corpus_file), str(source), "--tokenizer", str(tokenizer_dir),
                "--concat-tokens", "32", "--workers", "1", "--shard-size", "64KiB",
                "--compression", "zstd", "--no-progress"]  # fmt: skip
        assert main(args) == 0
    out = tmp_path / "corrupted"
    name, sample = _corrupt_copy(source, out)
    return out, name, sample


def test_flipped_bytes_fail_the_hash_check_naming_the_shard(corrupted, capsys) -> None:
    from foundry_data.cli import main

    dataset, shard_name, sample = corrupted
    code = main(["inspect", str(dataset), "--sample", str(sample)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert shard_name in err and ("hash" in err.lower() or "checksum" in err.lower()), err
