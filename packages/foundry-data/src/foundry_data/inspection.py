"""``foundry-data inspect``: what a dataset holds, and one sample decoded."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_data.errors import FoundryError, first_line
from foundry_data.finetuning_format import decode_finetuning_sample
from foundry_data.manifest import MANIFEST_NAME, DatasetManifest, is_remote, read_manifest
from foundry_data.progress import human_bytes
from foundry_data.shard_hashes import preferred_hash

__all__ = ["DatasetSummary", "describe", "inspect_dataset"]


@dataclass(frozen=True)
class DatasetSummary:
    location: str
    manifest: DatasetManifest | None
    num_shards: int
    num_samples: int
    raw_bytes: int
    stored_bytes: int
    columns: dict[str, str]
    compression: str | None
    hashes: list[str]


def _read_index(location: str, workdir: str) -> dict[str, Any]:
    if is_remote(location):
        from foundry_data.object_store import download

        local = os.path.join(workdir, "index.json")
        download(
            f"{location.rstrip('/')}/index.json",
            local,
            missing="not a dataset, or its conversion did not finish (run it again to complete it).",
        )
        path = Path(local)
    else:
        path = Path(location).expanduser() / "index.json"
        if not path.is_file():
            raise FoundryError(
                f"no index.json in {location}: not an MDS dataset folder, or its conversion did "
                "not finish (run it again to complete it)."
            )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FoundryError(f"cannot read {path}: {exc}.") from None


def _summary(location: str, workdir: str) -> DatasetSummary:
    index = _read_index(location, workdir)
    shards = index.get("shards", [])
    try:
        manifest: DatasetManifest | None = read_manifest(location)
    except FoundryError:
        manifest = None
    first = shards[0] if shards else {}
    encodings = first.get("column_encodings", [])
    names = first.get("column_names", [])
    return DatasetSummary(
        location=location,
        manifest=manifest,
        num_shards=len(shards),
        num_samples=sum(int(s.get("samples", 0)) for s in shards),
        raw_bytes=sum(int(s["raw_data"]["bytes"]) for s in shards),
        stored_bytes=sum(int((s.get("zip_data") or s["raw_data"])["bytes"]) for s in shards),
        columns=dict(zip(names, encodings, strict=False)),
        compression=first.get("compression"),
        hashes=list(first.get("hashes", [])),
    )


def describe(summary: DatasetSummary) -> list[str]:
    """Human-readable lines about the dataset."""
    m = summary.manifest
    lines = [f"dataset: {summary.location}" + (f" ({m.kind})" if m else "")]
    if m is None:
        lines.append(f"  manifest: none ({MANIFEST_NAME} missing: not made by foundry-data)")
    else:
        lines.append(
            f"  tokenizer: {m.tokenizer} (vocab {m.vocab_size:,}, eos {m.eos_token_id}, "
            f"bos {m.bos_token_id}, pad {m.pad_token_id})"
        )
        if m.kind == "pretraining":
            lines.append(
                f"  samples: {m.num_samples:,} x {m.seq_len} tokens = {m.num_tokens:,} tokens, "
                f"from {m.num_documents:,} documents ({m.num_dropped_tokens:,} tokens left over)"
            )
        else:
            lines.append(
                f"  samples: {m.num_samples:,} (up to {m.seq_len} tokens), {m.num_tokens:,} tokens, "
                f"from {m.num_documents:,} records"
            )
        if m.separator is not None:
            s = m.separator
            lines.append(
                f"  separators: bos {s.bos_text!r} {s.bos_tokens}, eos {s.eos_text!r} "
                f"{s.eos_tokens}, wrap {'yes' if s.wrap else 'no'}"
            )
        if m.finetuning is not None:
            f = m.finetuning
            lines.append(
                f"  records: {f.num_prompt_response_records:,} prompt/response, "
                f"{f.num_chat_records:,} chat; {f.num_truncated:,} truncated, {f.num_dropped:,} "
                f"dropped as too long ({f.overlong}), {f.num_empty:,} empty; "
                f"{f.num_prompt_tokens:,} prompt + {f.num_response_tokens:,} response tokens"
            )
        src = m.source
        extra = f", column {src.text_column!r}" if src.text_column else ""
        files = (
            f"{src.num_files} file{'s' if src.num_files != 1 else ''}"
            if src.num_files is not None
            else f"read with {src.reader}"
        )
        lines.append(f"  source: {src.spec} ({files}{extra})")
        lines.append(f"  made by: foundry-data {m.foundry_data_version}")
    lines.append(
        f"  shards: {summary.num_shards} holding {summary.num_samples:,} samples, "
        f"{human_bytes(summary.stored_bytes)} stored ({human_bytes(summary.raw_bytes)} raw), "
        f"compression {summary.compression or 'none'}, hashes {', '.join(summary.hashes) or 'none'}"
    )
    columns = ", ".join(f"{k} {v}" for k, v in summary.columns.items())
    lines.append(f"  columns: {columns}")
    return lines


def _open_dataset(location: str, workdir: str, validate_hash: str | None) -> Any:
    # A remote (or a local folder used as one) is read into a scratch cache, so inspecting never
    # writes into the dataset folder (streaming would unpack compressed shards there). Every
    # shard is checked against its stored hash on the way in.
    from streaming import StreamingDataset

    remote = location if is_remote(location) else str(Path(location).expanduser().absolute())
    return StreamingDataset(
        remote=remote,
        local=os.path.join(workdir, "cache"),
        shuffle=False,
        batch_size=1,
        validate_hash=validate_hash,
    )


def _read_sample(location: str, workdir: str, index: int, algo: str | None) -> dict[str, Any]:
    try:
        return _open_dataset(location, workdir, algo)[index]
    except ValueError as exc:
        if "Checksum failure" not in str(exc):
            raise
        shard = os.path.basename(str(exc).split("Checksum failure:", 1)[1].strip())
        raise FoundryError(
            f"shard {shard} of {location} failed its {algo} hash check: its bytes differ from "
            "what was written, so the file is corrupted (a bad copy or disk). Restore it from "
            "the original or re-run `foundry-data convert`."
        ) from None
    except Exception as exc:  # botocore / google / azure errors while fetching a shard
        if not is_remote(location):
            raise
        text = first_line(exc, empty=type(exc).__name__)
        raise FoundryError(
            f"cannot read the shards of {location}: {type(exc).__name__}: {text}. The store "
            "stopped answering while the sample was read; check that it is up, the "
            "credentials and, for S3-compatible stores, S3_ENDPOINT_URL, then run again."
        ) from None


def _decoder(summary: DatasetSummary, tokenizer: str | None) -> Any:
    name = tokenizer or (summary.manifest.tokenizer if summary.manifest else None)
    if name is None:
        return None
    from foundry_data.tokenizer_loading import load_tokenizer

    try:
        return load_tokenizer(name).hf
    except FoundryError:
        return None


def _sample_lines(sample: dict[str, Any], decoder: Any, max_chars: int) -> list[str]:
    def show(ids: Any) -> str:
        ids = [int(i) for i in ids]
        text = decoder.decode(ids) if decoder is not None else str(ids)
        if len(text) > max_chars:
            text = text[:max_chars] + f" ... [{len(text) - max_chars:,} more characters]"
        return textwrap.indent(text, "    ")

    if "tokens" in sample:
        return [show(sample["tokens"])]
    lines = []
    for i, turn in enumerate(sample["turns"]):
        lines.append(f"  turn {i + 1} prompt ({len(turn['input_ids'])} tokens):")
        lines.append(show(turn["input_ids"]))
        lines.append(f"  turn {i + 1} response ({len(turn['labels'])} tokens):")
        lines.append(show(turn["labels"]))
    decoded = decode_finetuning_sample(sample)
    targets = int((decoded.labels != -100).sum())
    lines.append(f"  {len(decoded)} tokens, {targets} of them training targets")
    return lines


def inspect_dataset(
    location: str,
    *,
    sample_index: int = 0,
    max_chars: int = 2000,
    tokenizer: str | None = None,
    as_json: bool = False,
) -> str:
    """The report ``foundry-data inspect`` prints."""
    workdir = tempfile.mkdtemp(prefix="foundry-inspect-")
    try:
        summary = _summary(location, workdir)
        if as_json:
            data = {k: v for k, v in summary.__dict__.items() if k != "manifest"}
            data["manifest"] = (
                summary.manifest.model_dump(mode="json") if summary.manifest else None
            )
            return json.dumps(data, indent=2)
        lines = describe(summary)
        if summary.num_samples == 0:
            return "\n".join(lines)
        if not 0 <= sample_index < summary.num_samples:
            raise FoundryError(
                f"--sample {sample_index} is out of range: the dataset has {summary.num_samples:,} "
                f"samples (0 to {summary.num_samples - 1:,})."
            )
        algo = preferred_hash(summary.hashes)
        sample = _read_sample(location, workdir, sample_index, algo)
        decoder = _decoder(summary, tokenizer)
        note = (
            "" if decoder is not None else " (token ids: tokenizer not available, pass --tokenizer)"
        )
        lines.append(f"sample {sample_index} of {summary.num_samples:,}{note}:")
        lines += _sample_lines(sample, decoder, max_chars)
        return "\n".join(lines)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
