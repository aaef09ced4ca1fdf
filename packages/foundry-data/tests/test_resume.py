"""The resume record: its round trip, partial shards dropped, reasons not to resume, and resumed
conversions (--no-wrap, fine-tuning, interrupted twice) equal to uninterrupted ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from foundry_data.mds_codecs import file_hash
from foundry_data.resume import (
    ResumeLog,
    ResumePosition,
    drop_unlisted_files,
    fingerprint,
    identity_difference,
    missing_shard,
    read_resume_record,
)

IDENTITY = {
    "kind": "convert",
    "source": {"spec": "x", "files": [["/data/a.jsonl", 10, 1], ["/data/b.jsonl", 20, 2]]},
    "options": {"seq_len": 128, "hashes": ["sha1", "xxh64"], "wrap": True},
}


def _shard(index: int, size: int, fill: bytes = b"x") -> dict:
    """The index entry of a shard file holding ``size`` bytes ``fill`` (when written)."""
    name = f"shard.{index:05}.mds"
    digest = file_hash("xxh64", fill * size)
    return {
        "samples": 4 + index,
        "raw_data": {"basename": name, "bytes": size, "hashes": {"xxh64": digest}},
        "zip_data": None,
        "format": "mds",
    }


def _position(num_shards: int, units_done: int) -> ResumePosition:
    return ResumePosition(
        fingerprint=fingerprint(IDENTITY),
        units_done=units_done,
        skip_samples=3,
        num_shards=num_shards,
        documents=17,
        tokens=9000,
        num_bytes=123456,
        state={"carry": [5, 6, 7], "parts": [], "dropped": 2, "samples": 40},
    )


def _staging_with_two_shards(tmp_path: Path) -> tuple[Path, list[dict]]:
    staging = tmp_path / "out.tmp-1"
    staging.mkdir()
    log = ResumeLog(staging, IDENTITY, None)
    shards = []
    for i in range(2):
        (staging / f"shard.{i:05}.mds").write_bytes(b"x" * (100 + i))
        shards.append(_shard(i, 100 + i))
        log.shard_closed(shards[-1], _position(i + 1, units_done=i))
    log.close()
    return staging, shards


def test_record_round_trip(tmp_path):
    staging, shards = _staging_with_two_shards(tmp_path)
    record = read_resume_record(staging)
    assert not isinstance(record, str), record
    assert record.identity == IDENTITY
    assert record.position == _position(2, units_done=1)
    assert record.shards == shards
    assert record.num_samples == 4 + 5

    # A resumed run carries the record on: it adds shards after the adopted ones.
    log = ResumeLog(staging, IDENTITY, record)
    (staging / "shard.00002.mds").write_bytes(b"y" * 7)
    log.shard_closed(_shard(2, 7), _position(3, units_done=2))
    log.close()
    again = read_resume_record(staging)
    assert not isinstance(again, str)
    assert again.shards == [*shards, _shard(2, 7)] and again.position.units_done == 2


def test_uncommitted_shard_line_is_ignored(tmp_path):
    staging, shards = _staging_with_two_shards(tmp_path)
    # Killed after appending a shard's line, before committing the position that counts it.
    with open(staging / ".resume" / "shards.jsonl", "a") as f:
        f.write(json.dumps(_shard(2, 50)) + "\n" + '{"samples": 1, "raw_da')
    record = read_resume_record(staging)
    assert not isinstance(record, str)
    assert record.shards == shards
    ResumeLog(staging, IDENTITY, record).close()  # taking it over drops the stray lines
    lines = (staging / ".resume" / "shards.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == shards


def test_partial_shard_and_leftovers_are_dropped(tmp_path):
    staging, shards = _staging_with_two_shards(tmp_path)
    (staging / "shard.00002.mds").write_bytes(b"partial")  # being written when killed
    (staging / "index.json").write_text("{")
    (staging / ".foundry_manifest.json.tmp-1").write_text("{")
    assert missing_shard(staging, shards) is None
    removed = drop_unlisted_files(staging, shards)
    assert removed == [".foundry_manifest.json.tmp-1", "index.json", "shard.00002.mds"]
    assert sorted(p.name for p in staging.iterdir()) == [
        ".resume",
        *[s["raw_data"]["basename"] for s in shards],
    ]


def test_truncated_or_missing_listed_shard_refuses_resume(tmp_path):
    staging, shards = _staging_with_two_shards(tmp_path)
    (staging / "shard.00001.mds").write_bytes(b"x" * 10)
    assert "shard.00001.mds has 10 bytes" in (missing_shard(staging, shards) or "")
    (staging / "shard.00000.mds").unlink()
    assert "shard.00000.mds is missing" in (missing_shard(staging, shards) or "")


def test_damaged_last_shard_refuses_resume(tmp_path):
    staging, shards = _staging_with_two_shards(tmp_path)
    assert missing_shard(staging, shards) is None
    # Right size, wrong bytes (as a machine that went down may leave it): its hash says so.
    (staging / "shard.00001.mds").write_bytes(b"\0" * 101)
    assert "shard.00001.mds does not match its xxh64 hash" in str(missing_shard(staging, shards))


def test_record_without_a_finished_shard_or_damaged(tmp_path):
    staging = tmp_path / "s"
    ResumeLog(staging, IDENTITY, None).close()
    assert read_resume_record(staging) == "it had not finished a shard yet"
    staging, _ = _staging_with_two_shards(tmp_path)
    (staging / ".resume" / "identity.json").write_text(json.dumps({**IDENTITY, "kind": "x"}))
    assert "does not match" in str(read_resume_record(staging))
    (staging / ".resume" / "position.json").write_text("{not json")
    assert "unreadable" in str(read_resume_record(staging))


def test_identity_difference_says_what_changed():
    assert identity_difference(IDENTITY, IDENTITY) is None
    options = {**IDENTITY, "options": {**IDENTITY["options"], "seq_len": 256}}
    assert identity_difference(IDENTITY, options) == (
        "option --concat-tokens was 128 there, 256 now"
    )
    files = [["/data/a.jsonl", 10, 1], ["/data/b.jsonl", 20, 3]]
    touched = {**IDENTITY, "source": {**IDENTITY["source"], "files": files}}
    assert "source file /data/b.jsonl changed since" in str(identity_difference(IDENTITY, touched))
    fewer = {**IDENTITY, "source": {**IDENTITY["source"], "files": files[:1]}}
    assert "/data/b.jsonl is gone" in str(identity_difference(IDENTITY, fewer))
    tokenizer = {**IDENTITY, "tokenizer": {"files": "abc"}}
    assert "tokenizer differs" in str(identity_difference(IDENTITY, tokenizer))


# ---------------------------------------------------------------------------------------------
# Whole conversions, interrupted in process (Ctrl-C raised right after a shard is committed).


@pytest.fixture
def interrupt_after(monkeypatch):
    """``interrupt_after(n)``: the next conversion gets a KeyboardInterrupt right after it
    commits a shard past its first unit, ``n`` shards into this run."""
    original = ResumeLog.shard_closed

    def arm(n: int) -> None:
        seen = {"shards": 0}

        def shard_closed(self: ResumeLog, shard: dict, position: ResumePosition) -> None:
            original(self, shard, position)
            seen["shards"] += 1
            if seen["shards"] >= n and position.units_done >= 1:
                monkeypatch.setattr(ResumeLog, "shard_closed", original)
                raise KeyboardInterrupt

        monkeypatch.setattr(ResumeLog, "shard_closed", shard_closed)

    return arm


def test_no_wrap_conversion_interrupted_twice(
    cli, mds, corpus_dir, tokenizer_dir, tmp_path, interrupt_after
):
    def args(out: Path) -> list:
        return ["convert", corpus_dir, out, "--tokenizer", tokenizer_dir, "--concat-tokens", 64,
                "--no-wrap", "--shard-size", "1KiB", "--workers", 1, "--no-progress"]  # fmt: skip

    # --no-wrap keeps one sample per document, so 1 KiB shards (3 samples): the second file's
    # documents fill enough shards for both interruptions, with room for the corpus (foundry-data's
    # own sources) to grow
    out = tmp_path / "out"
    interrupt_after(2)
    code, _, stderr = cli(*args(out))
    assert code == 130 and "run the same command again to resume" in stderr
    interrupt_after(3)
    code, _, stderr = cli(*args(out))
    assert code == 130 and "resuming the killed run" in stderr
    code, stdout, stderr = cli(*args(out))
    assert code == 0, stderr
    assert "resuming the killed run" in stderr and "resumed after" in stdout

    clean = tmp_path / "clean"
    assert cli(*args(clean))[0] == 0
    assert mds.tree(out) == mds.tree(clean)


def test_finetuning_conversion_resumes(
    cli, mds, documents, tokenizer_dir, tmp_path, interrupt_after
):
    source = tmp_path / "sft"
    for name in ("a", "b", "c"):  # a unit per file at least
        records = [{"prompt": f"{name} {i}: {d[:150]}", "response": d[150:300]}
                   for i, d in enumerate(documents) if len(d) > 300]  # fmt: skip
        source.mkdir(exist_ok=True)
        with open(source / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)

    def args(out: Path) -> list:
        return ["convert-finetuning", source, out, "--tokenizer", tokenizer_dir,
                "--max-seq-len", 64, "--shard-size", "2KiB", "--no-progress"]  # fmt: skip

    out = tmp_path / "out"
    interrupt_after(2)
    code, _, stderr = cli(*args(out))
    assert code == 130 and "run the same command again to resume" in stderr
    code, stdout, stderr = cli(*args(out))
    assert code == 0, stderr
    assert "resuming the killed run" in stderr and "records" in stderr
    assert "resumed after" in stdout

    clean = tmp_path / "clean"
    assert cli(*args(clean))[0] == 0
    assert mds.tree(out) == mds.tree(clean)
