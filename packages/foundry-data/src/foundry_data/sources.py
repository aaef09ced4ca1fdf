"""Finding the input named by SOURCE and cutting it into units of work.

SOURCE is a local file, a folder (read recursively), a glob, or a Hugging Face dataset name. Local
files are read by foundry-data itself, in order (sorted paths, then file order), streamed in
blocks so memory does not grow with the input. Hub names, and local files when ``--reader
datasets`` is given, go through ``datasets.load_dataset(..., streaming=True)``, so a large hub
dataset never waits on a full download.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from foundry_data.errors import FoundryError, first_line
from foundry_data.records import JsonLinesBlock, Records, TextFiles, TextLinesBlock, Unit
from foundry_data.tokenizer_loading import looks_like_local_path

__all__ = [
    "FORMATS",
    "ResolvedSource",
    "SourceFile",
    "iter_units",
    "resolve_source",
]

Format = Literal["jsonl", "json", "txt", "parquet", "csv"]
FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".txt": "txt",
    ".parquet": "parquet",
    ".csv": "csv",
}
BLOCK_BYTES = 1 << 20
"""Bytes of a JSON-lines or text-lines block handed to a worker."""
RECORDS_PER_UNIT = 512


@dataclass(frozen=True)
class SourceFile:
    path: str
    format: Format
    size: int


@dataclass(frozen=True)
class ResolvedSource:
    spec: str
    reader: Literal["files", "datasets"]
    files: tuple[SourceFile, ...] = ()
    subset: str | None = None
    split: str = "train"

    @property
    def total_bytes(self) -> int | None:
        return sum(f.size for f in self.files) if self.reader == "files" else None


def _files_under(spec: str) -> list[str]:
    path = Path(spec).expanduser()
    if path.is_dir():
        found = [
            str(p)
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in FORMATS and not p.name.startswith(".")
        ]
        if not found:
            raise FoundryError(
                f"folder {spec} holds no .txt, .json, .jsonl, .parquet or .csv files. Point "
                "SOURCE at a folder, file or glob of such files."
            )
        return sorted(found)
    if path.is_file():
        return [str(path)]
    if glob.has_magic(spec):
        matches = sorted(
            p for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p)
        )
        if not matches:
            raise FoundryError(f"no files match {spec!r}. Check the pattern and the folder.")
        return matches
    return []


def _as_source_file(path: str) -> SourceFile:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise FoundryError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}. foundry-data reads "
            ".txt, .json, .jsonl, .parquet and .csv files."
        )
    try:
        size = os.path.getsize(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise FoundryError(
            f"cannot read {path}: {exc.strerror}. Check it exists and is readable."
        ) from None
    return SourceFile(path=path, format=FORMATS[suffix], size=size)


def resolve_source(
    spec: str,
    *,
    reader: Literal["auto", "datasets"] = "auto",
    subset: str | None = None,
    split: str = "train",
) -> ResolvedSource:
    """Work out what SOURCE names. Local paths win over hub names.

    Raises:
        FoundryError: nothing local matches and the name cannot be a hub dataset.
    """
    paths = _files_under(spec)
    if paths:
        files = tuple(_as_source_file(p) for p in paths)
        if reader == "datasets":
            formats = {f.format for f in files}
            if len(formats) > 1:
                raise FoundryError(
                    f"--reader datasets needs files of one type, but {spec} mixes "
                    f"{', '.join(sorted(formats))}. Convert each type separately."
                )
        return ResolvedSource(
            spec=spec,
            reader=reader if reader == "datasets" else "files",
            files=files,
            subset=subset,
            split=split,
        )
    if looks_like_local_path(spec) or glob.has_magic(spec):
        raise FoundryError(
            f"source {spec!r} does not exist. Pass an existing file, folder or glob of .txt, "
            ".json, .jsonl, .parquet or .csv files, or a Hugging Face dataset name."
        )
    return ResolvedSource(spec=spec, reader="datasets", subset=subset, split=split)


# ---------------------------------------------------------------------------------------------
# Units of work. Each item is (unit, input bytes it covers) so progress can follow the bytes.


def iter_units(
    source: ResolvedSource,
    *,
    text_column: str | None,
    txt_unit: Literal["file", "line"] = "file",
) -> Iterator[tuple[Unit, int]]:
    """The source's units, in document order."""
    if source.reader == "datasets":
        yield from _dataset_units(source, text_column)
        return
    pending_txt: list[str] = []
    pending_bytes = 0
    for f in source.files:
        if f.format == "txt" and txt_unit == "file":
            pending_txt.append(f.path)
            pending_bytes += f.size
            if pending_bytes >= BLOCK_BYTES:
                yield TextFiles(tuple(pending_txt)), pending_bytes
                pending_txt, pending_bytes = [], 0
            continue
        if pending_txt:
            yield TextFiles(tuple(pending_txt)), pending_bytes
            pending_txt, pending_bytes = [], 0
        yield from _file_units(f, text_column)
    if pending_txt:
        yield TextFiles(tuple(pending_txt)), pending_bytes


def _file_units(f: SourceFile, text_column: str | None) -> Iterator[tuple[Unit, int]]:
    if f.format == "jsonl":
        yield from _line_blocks(f.path, JsonLinesBlock)
    elif f.format == "txt":
        yield from _line_blocks(f.path, TextLinesBlock)
    elif f.format == "json":
        yield from _json_file_units(f)
    elif f.format == "parquet":
        yield from _parquet_units(f, text_column)
    else:
        yield from _csv_units(f)


def _line_blocks(
    path: str, kind: type[JsonLinesBlock] | type[TextLinesBlock]
) -> Iterator[tuple[Unit, int]]:
    """Blocks of whole lines, about BLOCK_BYTES each."""
    line = 1
    carry = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(BLOCK_BYTES)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            block, carry = data[: cut + 1], data[cut + 1 :]
            yield kind(path, line, block), len(block)
            line += block.count(b"\n")
    if carry:
        yield kind(path, line, carry), len(carry)


def _first_char(path: str) -> bytes:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(4096)
            if not chunk:
                return b""
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1]


def _json_file_units(f: SourceFile) -> Iterator[tuple[Unit, int]]:
    """A .json file: a JSON array of records (read whole) or JSON lines (streamed)."""
    if _first_char(f.path) != b"[":
        yield from _line_blocks(f.path, JsonLinesBlock)
        return
    try:
        with open(f.path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise FoundryError(
            f"{f.path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}). Fix the "
            "file, or write it as JSON lines (.jsonl), one object per line."
        ) from None
    except UnicodeDecodeError:
        raise FoundryError(f"{f.path}: not valid UTF-8. Re-encode the file as UTF-8.") from None
    for start in range(0, len(data), RECORDS_PER_UNIT):
        chunk = data[start : start + RECORDS_PER_UNIT]
        origins = []
        for offset, record in enumerate(chunk):
            where = f"{f.path}: record {start + offset + 1}"
            if not isinstance(record, dict):
                raise FoundryError(
                    f"{where} is a JSON {type(record).__name__}, not an object. A .json file "
                    'must hold an array of objects such as {"text": "..."}.'
                )
            origins.append(where)
        yield Records(tuple(chunk), tuple(origins)), f.size * len(chunk) // max(len(data), 1)


def _parquet_units(f: SourceFile, text_column: str | None) -> Iterator[tuple[Unit, int]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(f.path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for damaged files
        raise FoundryError(f"{f.path}: not a readable Parquet file ({exc}).") from None
    names = parquet.schema_arrow.names
    columns = None
    if text_column is not None:
        if text_column not in names:
            raise FoundryError(
                f"{f.path}: no column {text_column!r}; its columns are "
                f"{', '.join(repr(n) for n in names)}. Pass the column holding the text with "
                "--text-column NAME."
            )
        columns = [text_column]
    total_rows = max(parquet.metadata.num_rows, 1)
    row = 0
    for batch in parquet.iter_batches(batch_size=RECORDS_PER_UNIT, columns=columns):
        records = tuple(batch.to_pylist())
        origins = tuple(f"{f.path}: row {row + i + 1}" for i in range(len(records)))
        row += len(records)
        yield Records(records, origins), f.size * len(records) // total_rows


def _csv_units(f: SourceFile) -> Iterator[tuple[Unit, int]]:
    csv.field_size_limit(1 << 30)
    with open(f.path, encoding="utf-8-sig", newline="") as fh:  # a BOM is not a column name
        reader = csv.DictReader(fh)
        records: list[dict[str, Any]] = []
        origins: list[str] = []
        nbytes = 0
        try:
            for record in reader:
                records.append(dict(record))
                origins.append(f"{f.path}:{reader.line_num}")
                nbytes += sum(len(v) for v in record.values() if isinstance(v, str)) + len(record)
                if len(records) == RECORDS_PER_UNIT:
                    yield Records(tuple(records), tuple(origins)), nbytes
                    records, origins, nbytes = [], [], 0
        except UnicodeDecodeError:
            raise FoundryError(f"{f.path}: not valid UTF-8. Re-encode the file as UTF-8.") from None
        except csv.Error as exc:
            raise FoundryError(f"{f.path}:{reader.line_num}: malformed CSV ({exc}).") from None
        if records:
            yield Records(tuple(records), tuple(origins)), nbytes


def _dataset_units(source: ResolvedSource, text_column: str | None) -> Iterator[tuple[Unit, int]]:
    dataset = open_streaming_dataset(source)
    records: list[dict[str, Any]] = []
    origins: list[str] = []
    nbytes = 0
    name = source.spec
    try:
        for index, record in enumerate(dataset):
            records.append(record)
            origins.append(f"{name}: record {index + 1}")
            nbytes += sum(len(v.encode("utf-8")) for v in record.values() if isinstance(v, str))
            if len(records) == RECORDS_PER_UNIT:
                yield Records(tuple(records), tuple(origins)), nbytes
                records, origins, nbytes = [], [], 0
    except FoundryError:
        raise
    except Exception as exc:  # datasets raises many kinds while streaming
        raise FoundryError(
            f"reading {name} with the `datasets` library failed: {type(exc).__name__}: "
            f"{first_line(exc)}. Check the files (or the dataset name, subset and split)."
        ) from None
    if records:
        yield Records(tuple(records), tuple(origins)), nbytes


_DATASETS_BUILDERS: dict[Format, str] = {
    "jsonl": "json",
    "json": "json",
    "txt": "text",
    "parquet": "parquet",
    "csv": "csv",
}


def open_streaming_dataset(source: ResolvedSource) -> Any:
    """A ``datasets.IterableDataset`` over the source (hub name, or local files)."""
    import datasets

    try:
        if source.files:
            builder = _DATASETS_BUILDERS[source.files[0].format]
            return datasets.load_dataset(
                builder,
                data_files=[f.path for f in source.files],
                split="train",
                streaming=True,
            )
        return datasets.load_dataset(
            source.spec, name=source.subset, split=source.split, streaming=True
        )
    except Exception as exc:  # DatasetNotFoundError, ConnectionError, ValueError (bad split), ...
        raise FoundryError(
            f"source {source.spec!r} is not a local file, folder or glob, and the `datasets` "
            f"library could not open it as a Hugging Face dataset ({type(exc).__name__}: "
            f"{first_line(exc)}). Check the path, or the dataset name, --subset and --split, "
            "and that the Hub (or its cache) is reachable."
        ) from None
