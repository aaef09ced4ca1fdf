"""Object-store output on a real S3 server (SeaweedFS, the root conftest's `s3_server`)."""

from __future__ import annotations

import subprocess

import numpy as np
from foundry_data import MANIFEST_NAME, read_manifest


def _convert(cli, source, out, tokenizer_dir, *extra):
    return cli(
        "convert", source, out, "--tokenizer", tokenizer_dir, "--concat-tokens", "128",
        "--shard-size", "32KiB", "--workers", "1", "--no-progress", *extra,
    )  # fmt: skip


def test_s3_round_trip_with_streaming_dataset(
    s3_server, cli, mds, corpus_dir, tokenizer_dir, tmp_path
):
    url = s3_server.url("convert-round-trip")
    code, stdout, stderr = _convert(cli, corpus_dir, url, tokenizer_dir)
    assert code == 0, stderr
    assert url in stdout

    keys = s3_server.keys("convert-round-trip/")
    names = {k.rsplit("/", 1)[1] for k in keys}
    assert {"index.json", MANIFEST_NAME} <= names
    assert len([n for n in names if n.startswith("shard.")]) >= 2

    local = tmp_path / "local"
    code, _, stderr = _convert(cli, corpus_dir, local, tokenizer_dir)
    assert code == 0, stderr
    remote_samples = mds.samples(url)  # StreamingDataset(remote=s3://..., local=cache)
    local_samples = mds.samples(local)
    assert len(remote_samples) == len(local_samples) > 0
    assert all(
        np.array_equal(r["tokens"], s["tokens"])
        for r, s in zip(remote_samples, local_samples, strict=True)
    )
    assert read_manifest(url) == read_manifest(local)

    code, stdout, stderr = cli("inspect", url)
    assert code == 0, stderr
    assert f"{len(local_samples):,} x 128 tokens" in stdout

    # An existing remote dataset is refused unless --overwrite; --local keeps a local copy.
    code, _, stderr = _convert(cli, corpus_dir, url, tokenizer_dir)
    assert code == 2 and "already holds a dataset" in stderr and "--overwrite" in stderr
    # A killed run's local work folder is not resumed for an object-store OUT: removed, and said.
    copy = tmp_path / "copy"
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / f"copy.tmp-{dead.pid}"
    leftover.mkdir()
    (leftover / "shard.00000.mds.zstd").write_bytes(b"from a killed run")
    code, _, stderr = _convert(cli, corpus_dir, url, tokenizer_dir, "--overwrite", "--local", copy)
    assert code == 0, stderr
    assert "resume is for local outputs only" in stderr and not leftover.exists()
    assert read_manifest(copy) == read_manifest(url)
    assert mds.tree(copy) == mds.tree(local)
