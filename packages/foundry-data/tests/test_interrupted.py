"""A conversion killed part-way leaves nothing that loads; the same command again continues from
its last finished shard and produces, byte for byte, what one uninterrupted run produces."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from foundry_data import read_manifest


def _run_cli_and_exit(args: list[str], sigint_exits: bool = False) -> None:
    """The command line in a forked child, with Python's own Ctrl-C behaviour (this process may
    have imported a library that replaced it) or, with ``sigint_exits``, a handler that calls
    ``sys.exit(130)`` (what importing composer installs)."""
    from foundry_data.cli import main

    if sigint_exits:
        signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(128 + signum))
    else:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    os._exit(code)


@pytest.fixture(scope="module", autouse=True)
def small_units():
    """Units of 64 KiB instead of 1 MiB (every run here, the killed ones forked from this
    process included): the 1.2 MB corpus is then about 18 units, so a run is stopped two units in,
    far from its end even when this process is slow to notice, and the next run has units to
    skip."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("foundry_data.sources.BLOCK_BYTES", 1 << 16)
        yield


@pytest.fixture(scope="module")
def bigger_corpus(tmp_path_factory: pytest.TempPathFactory, documents: list[str]) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for copy in range(6):
            for doc in documents:
                f.write(json.dumps({"text": f"[copy {copy}]\n{doc}"}, ensure_ascii=False) + "\n")
    return path


def _args(corpus: Path, out: Path, tokenizer: Path, *extra: str) -> list[str]:
    return ["convert", str(corpus), str(out), "--tokenizer", str(tokenizer), "--concat-tokens",
            "128", "--shard-size", "8KiB", "--no-progress", *extra]  # fmt: skip


def _position(staging: Path) -> dict:
    """The work folder's resume position ({} before its first shard is finished)."""
    try:
        return json.loads((staging / ".resume" / "position.json").read_text())
    except (OSError, ValueError):
        return {}


def _stop_part_way(
    args: list[str], out: Path, sig: int = signal.SIGKILL, sigint_exits: bool = False
) -> tuple[Path, int]:
    """Run the conversion in a real process and send it ``sig`` once its work folder holds at
    least two finished shards and it is past its first unit (block) of input, so that the
    next run has units to skip; returns the work folder and the exit code."""
    # fork: the child starts at once, with foundry-data already imported.
    child = multiprocessing.get_context("fork").Process(
        target=_run_cli_and_exit, args=(args, sigint_exits)
    )
    child.start()
    assert child.pid is not None
    staging = out.with_name(f"{out.name}.tmp-{child.pid}")
    deadline = time.monotonic() + 120
    while _position(staging).get("units_done", 0) < 2:
        assert child.exitcode is None, "the conversion ended before it could be interrupted"
        assert time.monotonic() < deadline, "the conversion wrote no shards"
        time.sleep(0.005)
    os.kill(child.pid, sig)
    child.join()
    assert child.exitcode is not None
    assert not out.exists(), "the conversion finished before the signal reached it"
    return staging, child.exitcode


@pytest.fixture(scope="module")
def clean(bigger_corpus: Path, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted conversion of the corpus (2 workers)."""
    from foundry_data.cli import main

    out = tmp_path_factory.mktemp("clean") / "clean"
    assert main(_args(bigger_corpus, out, tokenizer_dir, "--workers", "2")) == 0
    assert read_manifest(out).num_samples > 50
    return out


@pytest.fixture(scope="module")
def killed(bigger_corpus: Path, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the work folder a SIGKILLed run left, and the pid in its name."""
    out = tmp_path_factory.mktemp("killed") / "out"
    staging, code = _stop_part_way(_args(bigger_corpus, out, tokenizer_dir, "--workers", "1"), out)
    assert code == -signal.SIGKILL
    pristine = tmp_path_factory.mktemp("pristine") / "staging"
    shutil.move(staging, pristine)
    return pristine, staging.name.rsplit("-", 1)[1]


def _leave_killed_run(killed: tuple[Path, str], out: Path) -> Path:
    """Put a copy of the killed run's work folder beside ``out``, as the killed run left it."""
    pristine, pid = killed
    staging = out.with_name(f"{out.name}.tmp-{pid}")
    shutil.copytree(pristine, staging)
    return staging


@pytest.mark.parametrize("workers", ["1", "2"])
def test_killed_conversion_resumes_byte_identical(
    cli, mds, bigger_corpus, tokenizer_dir, clean, tmp_path, workers
):
    out = tmp_path / "out"
    args = _args(bigger_corpus, out, tokenizer_dir, "--workers", workers)
    staging, code = _stop_part_way(args, out)
    assert code == -signal.SIGKILL

    # Nothing loads as a dataset: OUT does not exist, the work folder has shards but no index.
    assert not out.exists()
    assert staging.is_dir() and not (staging / "index.json").exists()
    assert len(list(staging.glob("shard.*"))) >= 2

    code, stdout, stderr = cli(*args)  # the same command again
    assert code == 0, stderr
    assert "resuming the killed run" in stderr and "shards" in stderr
    assert "resumed after" in stdout
    assert not staging.exists()  # taken over, then renamed to OUT
    assert mds.tree(out) == mds.tree(clean)
    assert ".resume" not in {p.name for p in out.iterdir()}


@pytest.mark.parametrize("sigint_exits", [False, True], ids=["keyboard-interrupt", "sys-exit"])
def test_ctrl_c_keeps_the_work_for_the_next_run(
    cli, mds, bigger_corpus, tokenizer_dir, clean, tmp_path, sigint_exits
):
    out = tmp_path / "out"
    args = _args(bigger_corpus, out, tokenizer_dir, "--workers", "1")
    staging, code = _stop_part_way(args, out, signal.SIGINT, sigint_exits)
    assert code == 130  # KeyboardInterrupt handled by the command line, or the handler's exit
    assert staging.is_dir() and not out.exists()

    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert "resuming the killed run" in stderr
    assert "resumed after" in stdout
    assert mds.tree(out) == mds.tree(clean)


def test_changed_option_starts_over(cli, mds, bigger_corpus, tokenizer_dir, killed, tmp_path):
    out = tmp_path / "out"
    staging = _leave_killed_run(killed, out)
    args = _args(bigger_corpus, out, tokenizer_dir, "--workers", "1", "--hashes", "xxh64")
    code, _, stderr = cli(*args)
    assert code == 0, stderr
    assert "not resuming" in stderr and "--hashes" in stderr and "starting over" in stderr
    assert not staging.exists()

    uninterrupted = tmp_path / "uninterrupted"
    code, _, stderr = cli(*_args(bigger_corpus, uninterrupted, tokenizer_dir, "--hashes", "xxh64"))
    assert code == 0, stderr
    assert mds.tree(out) == mds.tree(uninterrupted)


def test_touched_source_file_starts_over(
    cli, mds, bigger_corpus, tokenizer_dir, clean, killed, tmp_path
):
    out = tmp_path / "out"
    staging = _leave_killed_run(killed, out)
    before = bigger_corpus.stat()
    os.utime(bigger_corpus, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    try:
        code, _, stderr = cli(*_args(bigger_corpus, out, tokenizer_dir, "--workers", "1"))
    finally:
        os.utime(bigger_corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert code == 0, stderr
    assert "not resuming" in stderr and "changed since" in stderr
    assert not staging.exists()
    assert mds.tree(out) == mds.tree(clean)


def test_no_resume_starts_over(cli, mds, bigger_corpus, tokenizer_dir, clean, killed, tmp_path):
    out = tmp_path / "out"
    staging = _leave_killed_run(killed, out)
    code, _, stderr = cli(*_args(bigger_corpus, out, tokenizer_dir, "--no-resume"))
    assert code == 0, stderr
    assert "not resuming the killed run" in stderr and "--no-resume was given" in stderr
    assert not staging.exists()
    assert mds.tree(out) == mds.tree(clean)


def test_partial_shard_of_the_killed_run_is_dropped(
    cli, mds, bigger_corpus, tokenizer_dir, clean, killed, tmp_path
):
    out = tmp_path / "out"
    staging = _leave_killed_run(killed, out)
    committed = _position(staging)["num_shards"]
    # What a run killed while writing the next shard (and its index line) leaves behind.
    (staging / f"shard.{committed:05}.mds.zstd").write_bytes(b"half a shard")
    with open(staging / ".resume" / "shards.jsonl", "a") as f:
        f.write('{"samples": 3, "raw_data": {"basen')
    # Killed with one worker, resumed with two: the worker count is free to change.
    code, _, stderr = cli(*_args(bigger_corpus, out, tokenizer_dir, "--workers", "2"))
    assert code == 0, stderr
    assert f"{committed:,} shards" in stderr
    assert mds.tree(out) == mds.tree(clean)


def test_ctrl_c_at_the_terminal_stops_every_worker_cleanly(documents, tokenizer_dir, tmp_path):
    """Ctrl-C in a terminal goes to the whole process group, tokenizer workers included. Only
    the parent handles it: the command exits with 130 and its one-line message, and no worker
    prints a traceback (an interrupted worker also used to leave half a result in the pool's
    pipe, and the command then hung)."""
    import subprocess

    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for copy in range(40):  # about 8 MB: eight 1 MiB units, so the run is stopped mid-way
            for doc in documents:
                f.write(json.dumps({"text": f"[copy {copy}]\n{doc}"}, ensure_ascii=False) + "\n")
    out = tmp_path / "out"
    args = _args(corpus, out, tokenizer_dir, "--workers", "3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundry_data", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )
    staging = out.with_name(f"{out.name}.tmp-{proc.pid}")
    deadline = time.monotonic() + 120
    while _position(staging).get("units_done", 0) < 2:
        assert proc.poll() is None, "the conversion ended before it could be interrupted"
        assert time.monotonic() < deadline, "the conversion wrote no shards"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the conversion did not exit within 60 s of Ctrl-C")
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert staging.is_dir() and not out.exists()
