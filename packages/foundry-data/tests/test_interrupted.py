"""A conversion killed mid-way leaves nothing that loads; running it again finishes the job."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from foundry_data import read_manifest


def _run_cli_and_exit(args: list[str]) -> None:
    from foundry_data.cli import main

    os._exit(main(args))


@pytest.fixture(scope="module")
def bigger_corpus(tmp_path_factory: pytest.TempPathFactory, documents: list[str]) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for copy in range(12):
            for doc in documents:
                f.write(json.dumps({"text": f"[copy {copy}]\n{doc}"}, ensure_ascii=False) + "\n")
    return path


def test_killed_conversion_then_rerun_equals_a_clean_run(
    cli, mds, bigger_corpus, tokenizer_dir, tmp_path
):
    out = tmp_path / "out"
    args = ["convert", str(bigger_corpus), str(out), "--tokenizer", str(tokenizer_dir),
            "--concat-tokens", "128", "--shard-size", "8KiB", "--workers", "1", "--no-progress"]  # fmt: skip

    # A real process, killed with SIGKILL while it is writing shards. (fork: the child starts at
    # once, with foundry-data already imported.)
    child = multiprocessing.get_context("fork").Process(target=_run_cli_and_exit, args=(args,))
    child.start()
    assert child.pid is not None
    staging = tmp_path / f"out.tmp-{child.pid}"
    deadline = time.monotonic() + 120
    while len(list(staging.glob("shard.*"))) < 3:
        assert child.exitcode is None, "the conversion ended before it could be interrupted"
        assert time.monotonic() < deadline, "the conversion wrote no shards"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL

    # Nothing loads as a dataset: OUT does not exist, the work folder has shards but no index.
    assert not out.exists()
    assert staging.is_dir() and not (staging / "index.json").exists()

    code, _, stderr = cli(*args)  # the same command again
    assert code == 0, stderr
    assert not staging.exists()  # the dead run's work folder was cleared

    clean = tmp_path / "clean"
    code, _, stderr = cli(
        *[str(clean) if a == str(out) else a for a in args[:-3]], "--workers", "2", "--no-progress"
    )
    assert code == 0, stderr
    assert mds.tree(out) == mds.tree(clean)
    assert read_manifest(out).num_samples > 50
