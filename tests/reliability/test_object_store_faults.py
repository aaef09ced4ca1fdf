"""The S3 server goes away during an upload and during a read, then comes back.

A private SeaweedFS server (conftest.py's ``restartable_s3``) is killed with SIGKILL at a chosen
moment: after the first shard of a conversion reached it, and after the first object of a read
came from it. What must happen: the command gives up after a bounded number of quick retries
with one clear ``error:`` paragraph (exit status 2, no traceback), nothing half-done looks like a
dataset (no index.json at the prefix), local data is untouched, and the same command works once
the server is back. foundry-train starting from a dataset in a store that is down is checked too.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
import yaml
from foundry_data import read_manifest

BOUND_S = 120  # "bounded retries": a dead store must be reported within this many seconds


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stop_on_call(monkeypatch, cls: type, name: str, server, call: int) -> list[int]:
    """Wrap ``cls.name`` so that the ``call``-th call first kills the S3 server."""
    real = getattr(cls, name)
    calls = [0]
    lock = threading.Lock()

    def wrapped(self, *args, **kwargs):
        with lock:
            calls[0] += 1
            if calls[0] == call:
                server.stop()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapped)
    return calls


@pytest.fixture
def s3(restartable_s3, monkeypatch):
    if restartable_s3.process is None or restartable_s3.process.poll() is not None:
        restartable_s3.start()  # an earlier test left it stopped
    for key, value in restartable_s3.env.items():
        monkeypatch.setenv(key, value)
    return restartable_s3


def _convert_args(corpus: Path, out: str, tokenizer: Path) -> list[str]:
    return ["convert", str(corpus), out, "--tokenizer", str(tokenizer), "--concat-tokens", "32",
            "--shard-size", "4KiB", "--compression", "none", "--workers", "1", "--no-progress"]  # fmt: skip


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from foundry_data.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _clear_error(code: int, err: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1, err


def test_store_dies_during_upload_then_rerun_succeeds(
    s3, monkeypatch, capsys, corpus_file: Path, tokenizer_dir: Path, pretrain_dir: Path, tmp_path
) -> None:
    import tempfile

    from streaming.base.storage.upload import S3Uploader

    url = s3.url("upload-fault")
    source_digest = _digest(corpus_file)
    scratch = tmp_path / "scratch"  # where the conversion stages its shards
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real_upload = S3Uploader.upload_file
    calls = _stop_on_call(monkeypatch, S3Uploader, "upload_file", s3, call=3)
    start = time.monotonic()
    code, _, err = _cli(capsys, *_convert_args(corpus_file, url, tokenizer_dir))
    elapsed = time.monotonic() - start
    _clear_error(code, err)
    assert url in err and "run the command again" in err.lower(), err
    assert calls[0] >= 3 and elapsed < BOUND_S, (calls, elapsed)
    monkeypatch.setattr(S3Uploader, "upload_file", real_upload)

    s3.start()  # the store comes back, with what it had received
    keys = s3.keys("upload-fault/")
    assert not any(k.endswith(("index.json", "foundry_manifest.json")) for k in keys), keys
    assert _digest(corpus_file) == source_digest
    assert not list(scratch.iterdir()), "the failed run left its local staging folder behind"

    code, out, err = _cli(capsys, *_convert_args(corpus_file, url, tokenizer_dir))
    assert code == 0, err
    manifest = read_manifest(url)
    assert manifest.num_samples == read_manifest(pretrain_dir).num_samples > 0
    code, out, err = _cli(capsys, "inspect", url)
    assert code == 0 and f"{manifest.num_samples:,} x 32 tokens" in out, err


@pytest.fixture
def uploaded(s3, capsys, corpus_file: Path, tokenizer_dir: Path) -> str:
    url = s3.url("read-fault")
    if not any(k.endswith("index.json") for k in s3.keys("read-fault/")):
        code, _, err = _cli(capsys, *_convert_args(corpus_file, url, tokenizer_dir))
        assert code == 0, err
    return url


def _train_config(path: Path, url: str, tokenizer: Path, cache: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "model": {"name": "mpt", "preset": "debug"}, "max_seq_len": 32,
        "tokenizer": {"name": str(tokenizer)},
        "train_loader": {"dataset": {"remote": url, "local": str(cache)}},
        "max_duration": "2ba", "global_train_batch_size": 2, "device_train_microbatch_size": 2,
        "precision": "fp32", "progress_bar": False,
    }))  # fmt: skip
    return path


def test_store_down_for_a_read_then_back(s3, uploaded: str, capsys) -> None:
    before = sorted(s3.keys("read-fault/"))
    s3.stop()
    start = time.monotonic()
    code, _, err = _cli(capsys, "inspect", uploaded, "--sample", "3")
    _clear_error(code, err)
    assert uploaded in err and time.monotonic() - start < BOUND_S, err

    s3.start()
    assert sorted(s3.keys("read-fault/")) == before  # the store's data survived
    code, out, err = _cli(capsys, "inspect", uploaded, "--sample", "3")
    assert code == 0 and "sample 3 of" in out, err


def test_training_from_a_store_that_is_down_is_a_clear_error(
    s3, uploaded: str, capsys, tokenizer_dir: Path, tmp_path: Path
) -> None:
    from foundry_train.cli import main as train_main

    cfg = _train_config(tmp_path / "train.yaml", uploaded, tokenizer_dir, tmp_path / "cache")
    s3.stop()
    start = time.monotonic()
    code = train_main([str(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert uploaded in err and time.monotonic() - start < BOUND_S, err


def test_store_dies_in_the_middle_of_a_read(s3, uploaded: str, monkeypatch, capsys) -> None:
    from streaming.base.storage.download import S3Downloader

    # index.json comes through, then the store dies before the rest of the read.
    calls = _stop_on_call(monkeypatch, S3Downloader, "_download_file_impl", s3, call=2)
    start = time.monotonic()
    code, _, err = _cli(capsys, "inspect", uploaded, "--sample", "3")
    assert calls[0] >= 2
    _clear_error(code, err)
    assert uploaded in err and time.monotonic() - start < BOUND_S, err
