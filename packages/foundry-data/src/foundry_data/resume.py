"""What a conversion keeps on disk so that a killed run can continue from its last closed shard.

A local conversion's work folder (``OUT.tmp-<pid>``) holds, besides the shards, a ``.resume``
folder:

- ``identity.json``: everything that decides the output bytes (resolved source files with their
  sizes and modification times, a hash of the tokenizer, every option that changes the output),
  written once when the run starts;
- ``shards.jsonl``: one line per closed shard, the entry ``index.json`` will list for it,
  appended as each shard is closed (so each shard costs one short write, however many came
  before);
- ``position.json``: where the run stood when its last shard closed (see :class:`ResumePosition`),
  replaced atomically (temporary name, then rename) right after the line above is written.

``position.json`` is the commit point: a shard counts only once it is listed there (by count), so
a shard file, or a ``shards.jsonl`` line, written by a run killed before it could replace
``position.json`` is ignored and the shard is written again. The ``.resume`` folder is removed
before the finished folder is renamed to OUT, so a dataset never contains it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from foundry_data.mds_codecs import file_hash

__all__ = [
    "RESUME_DIR",
    "TOKENIZER_SUFFIXES",
    "ResumeLog",
    "ResumePosition",
    "ResumeRecord",
    "drop_unlisted_files",
    "hash_files",
    "identity_difference",
    "missing_shard",
    "read_resume_record",
    "shard_basename",
]

RESUME_DIR = ".resume"
FORMAT_VERSION = 1
_IDENTITY = "identity.json"
_SHARDS = "shards.jsonl"
_POSITION = "position.json"
_FLAGS = {"seq_len": "--concat-tokens", "wrap": "--no-wrap", "max_seq_len": "--max-seq-len"}


@dataclass(frozen=True)
class ResumePosition:
    """Where a conversion stood when a shard closed.

    A conversion reads its source as a sequence of *units* (blocks of lines, batches of
    records). The shard closed part-way through a unit; the position is the state from just
    before that unit, plus how many of that unit's samples the closed shards already hold. To
    continue, a run restores the state, skips ``units_done`` units unread, and processes the next
    unit again, dropping its first ``skip_samples`` samples.
    """

    fingerprint: str
    """Hash of the run's identity (``identity.json``)."""
    units_done: int
    """Source units fully consumed before the unit in progress."""
    skip_samples: int
    """Samples of the unit in progress that are already in closed shards."""
    num_shards: int
    """Closed shards: the first ``num_shards`` lines of ``shards.jsonl``."""
    documents: int
    tokens: int
    num_bytes: int
    """Progress counters (documents, tokens, input bytes) before the unit in progress."""
    state: dict[str, Any]
    """The conversion's own state before the unit in progress (token carry-over, counters)."""


@dataclass(frozen=True)
class ResumeRecord:
    """A killed run's record, read back: what it was, where it stood, which shards it closed."""

    identity: dict[str, Any]
    position: ResumePosition
    shards: list[dict[str, Any]]

    @property
    def num_samples(self) -> int:
        return sum(int(shard["samples"]) for shard in self.shards)


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(identity).encode("utf-8")).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class ResumeLog:
    """Writes a run's resume record into its work folder as its shards close."""

    def __init__(
        self, staging: Path, identity: dict[str, Any], record: ResumeRecord | None
    ) -> None:
        """Start the record of a fresh run (``record`` None), or carry on the adopted ``record``
        (its work folder already renamed to ``staging``)."""
        self.folder = staging / RESUME_DIR
        self.fingerprint = fingerprint(identity)
        self.num_shards = 0 if record is None else record.position.num_shards
        self.folder.mkdir(parents=True, exist_ok=True)
        if record is None:
            _write_atomically(self.folder / _IDENTITY, _canonical(identity) + "\n")
        # A killed run may have appended a shard it did not get to commit: keep only the committed
        # lines (the same first lines, so the old position stays valid throughout).
        lines = [] if record is None else [_canonical(s) + "\n" for s in record.shards]
        _write_atomically(self.folder / _SHARDS, "".join(lines))
        self._shards = open(self.folder / _SHARDS, "a", encoding="utf-8")  # noqa: SIM115

    def shard_closed(self, shard: dict[str, Any], position: ResumePosition) -> None:
        """Append ``shard``'s index entry, then commit ``position`` (which counts it)."""
        self._shards.write(_canonical(shard) + "\n")
        self._shards.flush()
        self.num_shards += 1
        if position.num_shards != self.num_shards or position.fingerprint != self.fingerprint:
            raise RuntimeError("resume position out of step with the shards written")
        self._write_position(position)

    def _write_position(self, position: ResumePosition) -> None:
        data = {"format_version": FORMAT_VERSION, **asdict(position)}
        _write_atomically(self.folder / _POSITION, _canonical(data) + "\n")

    @property
    def resumable(self) -> bool:
        """Whether the work folder holds a committed position a later run can resume from."""
        return (self.folder / _POSITION).is_file()

    def remove(self) -> None:
        """Delete the record (before the finished folder becomes OUT)."""
        self._shards.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        self._shards.close()


def read_resume_record(staging: Path) -> ResumeRecord | str:
    """The resume record in a killed run's work folder, or why there is none to use."""
    folder = staging / RESUME_DIR
    if not (folder / _POSITION).is_file():
        return "it had not finished a shard yet"
    try:
        identity = json.loads((folder / _IDENTITY).read_text(encoding="utf-8"))
        data = json.loads((folder / _POSITION).read_text(encoding="utf-8"))
        if data.pop("format_version", None) != FORMAT_VERSION:
            return "its resume record was written by another version of foundry-data"
        position = ResumePosition(**data)
        with open(folder / _SHARDS, encoding="utf-8") as f:
            lines = [f.readline() for _ in range(position.num_shards)]
        shards = [json.loads(line) for line in lines]
    except (OSError, ValueError, TypeError) as exc:  # unreadable, bad JSON, missing fields
        return f"its resume record is unreadable ({type(exc).__name__})"
    if not isinstance(identity, dict) or position.fingerprint != fingerprint(identity):
        return "its resume record does not match its identity file"
    return ResumeRecord(identity=identity, position=position, shards=shards)


def shard_basename(shard: dict[str, Any]) -> str:
    """The file name of a shard's index entry (compressed file if any)."""
    info = shard.get("zip_data") or shard["raw_data"]
    return str(info["basename"])


def missing_shard(staging: Path, shards: list[dict[str, Any]]) -> str | None:
    """Why the listed shards cannot be trusted, or None: one is missing or has the wrong size, or
    the last one (the likeliest to be damaged if the machine went down) fails its hash."""
    for shard in shards:
        info = shard.get("zip_data") or shard["raw_data"]
        path = staging / str(info["basename"])
        try:
            size = path.stat().st_size
        except OSError:
            return f"its shard {path.name} is missing"
        if size != int(info["bytes"]):
            return (
                f"its shard {path.name} has {size:,} bytes, not the {int(info['bytes']):,} recorded"
            )
    if shards:
        info = shards[-1].get("zip_data") or shards[-1]["raw_data"]
        hashes: dict[str, str] = info.get("hashes") or {}
        if hashes:
            name, expected = min(hashes.items())  # any one will do
            data = (staging / str(info["basename"])).read_bytes()
            if file_hash(name, data) != expected:
                return f"its shard {info['basename']} does not match its {name} hash"
    return None


def drop_unlisted_files(staging: Path, shards: list[dict[str, Any]]) -> list[str]:
    """Remove everything in ``staging`` but the listed shards and the record: a shard being
    written when the run was killed, a half-written index, temporary files. Returns the names
    removed."""
    keep = {shard_basename(shard) for shard in shards} | {RESUME_DIR}
    removed: list[str] = []
    for path in sorted(staging.iterdir()):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


TOKENIZER_SUFFIXES = frozenset({".json", ".txt", ".model", ".jinja", ".tiktoken", ".py"})
"""Files of a tokenizer folder that can change how it tokenizes (not model weights, which a
model folder passed as --tokenizer also holds)."""


def hash_files(path: Path, suffixes: frozenset[str] | None = None) -> str | None:
    """sha256 over the names and contents of the files at ``path`` (a file, or the files directly
    in a folder whose suffix is in ``suffixes``, all if None); None if nothing is there."""
    if path.is_file():
        files = [path]
        root = path.parent
    elif path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and (suffixes is None or p.suffix.lower() in suffixes)
        )
        root = path
    else:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root)).encode("utf-8") + b"\0")
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def identity_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between a killed run's identity and this run's, in words; None if nothing."""
    for key in sorted(set(old) | set(new)):
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        if key == "source":
            return _source_difference(was or {}, now or {})
        if key == "options":
            return _option_difference(was or {}, now or {})
        if key == "foundry_data_version":
            return f"it ran foundry-data {was}, this is {now}"
        if key == "kind":
            return f"it was a `foundry-data {was}` run"
        if key == "tokenizer":
            return "its tokenizer differs (its files or what it was loaded as)"
        return f"its {key.replace('_', ' ')} differs"
    return None


def _option_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
            return f"option {flag} was {old.get(name)!r} there, {new.get(name)!r} now"
    return "its options differ"


def _source_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    old_files = {f[0]: f[1:] for f in old.get("files", [])}
    new_files = {f[0]: f[1:] for f in new.get("files", [])}
    for path, stat in new_files.items():
        if path in old_files and old_files[path] != stat:
            return f"source file {path} changed since (size or modification time)"
    if old_files.keys() != new_files.keys():
        added = sorted(new_files.keys() - old_files.keys())
        gone = sorted(old_files.keys() - new_files.keys())
        return (
            f"source file {added[0]} is new" if added else f"source file {gone[0]} is gone"
        ) + " since"
    for name in sorted(set(old) | set(new)):
        if name != "files" and old.get(name) != new.get(name):
            return f"SOURCE's {name} was {old.get(name)!r} there, {new.get(name)!r} now"
    return "its source differs"
