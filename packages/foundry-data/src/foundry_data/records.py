"""Records and texts out of raw input chunks.

This module runs inside conversion worker processes, so it imports only the standard library:
a worker starts in well under a second. A *unit* is one piece of input the main process hands to
a worker; every unit knows where it came from, so an error names the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from foundry_data.errors import FoundryError

__all__ = [
    "JsonLinesBlock",
    "Records",
    "TextFiles",
    "TextLinesBlock",
    "Unit",
    "record_text",
    "unit_records",
    "unit_texts",
]


@dataclass(frozen=True)
class JsonLinesBlock:
    """Whole lines of a JSON-lines file; ``first_line`` is the 1-based number of the first."""

    path: str
    first_line: int
    data: bytes


@dataclass(frozen=True)
class TextLinesBlock:
    """Whole lines of a text file read one document per line."""

    path: str
    first_line: int
    data: bytes


@dataclass(frozen=True)
class TextFiles:
    """Text files read one document per file."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class Records:
    """Records already parsed by the main process (parquet, CSV, JSON arrays, `datasets`).

    ``origins[i]`` names where ``records[i]`` came from, for error messages.
    """

    records: tuple[dict[str, Any], ...]
    origins: tuple[str, ...]


Unit = JsonLinesBlock | TextLinesBlock | TextFiles | Records


def record_text(record: dict[str, Any], column: str, where: str) -> str:
    """The text in ``record[column]``, or a FoundryError naming ``where`` and the columns there are."""
    try:
        value = record[column]
    except KeyError:
        columns = ", ".join(repr(c) for c in record) or "(none)"
        raise FoundryError(
            f"{where}: no column {column!r} in this record; its columns are {columns}. Pass the "
            "column holding the text with --text-column NAME."
        ) from None
    if not isinstance(value, str):
        raise FoundryError(
            f"{where}: column {column!r} holds {type(value).__name__} "
            f"({_preview(value)}), not text. Pass the column holding the text with "
            "--text-column NAME, or fix the record."
        )
    return value


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_lines(block: JsonLinesBlock) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for offset, line in enumerate(block.data.split(b"\n")):
        if not line.strip():
            continue
        lineno = block.first_line + offset
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FoundryError(
                f"{block.path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno}). "
                "Each line of a .jsonl file must be one JSON object; fix or remove that line."
            ) from None
        except UnicodeDecodeError:
            raise FoundryError(
                f"{block.path}:{lineno}: not valid UTF-8. Re-encode the file as UTF-8."
            ) from None
        if not isinstance(record, dict):
            raise FoundryError(
                f"{block.path}:{lineno}: a JSON {type(record).__name__}, not an object. Each line "
                'must be one JSON object such as {"text": "..."}.'
            )
        out.append((lineno, record))
    return out


def _read_text_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is not text
            return f.read()
    except UnicodeDecodeError as exc:
        raise FoundryError(
            f"{path}: not valid UTF-8 (byte {exc.start}). Re-encode the file as UTF-8."
        ) from None
    except OSError as exc:
        raise FoundryError(
            f"cannot read {path}: {exc.strerror}. Check it exists and is readable."
        ) from None


def _text_lines(block: TextLinesBlock) -> list[str]:
    try:
        text = block.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = block.first_line + block.data[: exc.start].count(b"\n")
        raise FoundryError(
            f"{block.path}:{line}: not valid UTF-8. Re-encode the file as UTF-8."
        ) from None
    if block.first_line == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark is not text
    # one document a line, without the \r of CRLF files (file mode's universal newlines drop it)
    return [line.removesuffix("\r") for line in text.split("\n") if line.strip()]


def unit_texts(unit: Unit, text_column: str) -> list[str]:
    """The document texts in ``unit``, in order."""
    if isinstance(unit, JsonLinesBlock):
        return [
            record_text(record, text_column, f"{unit.path}:{lineno}")
            for lineno, record in _json_lines(unit)
        ]
    if isinstance(unit, TextLinesBlock):
        return _text_lines(unit)
    if isinstance(unit, TextFiles):
        return [_read_text_file(path) for path in unit.paths]
    return [
        record_text(record, text_column, origin)
        for record, origin in zip(unit.records, unit.origins, strict=True)
    ]


def unit_records(unit: Unit) -> list[tuple[str, dict[str, Any]]]:
    """The records in ``unit`` with their origins (``file:line``), for fine-tuning conversion."""
    if isinstance(unit, JsonLinesBlock):
        return [(f"{unit.path}:{lineno}", record) for lineno, record in _json_lines(unit)]
    if isinstance(unit, Records):
        return list(zip(unit.origins, unit.records, strict=True))
    raise FoundryError(
        "fine-tuning records must come from .jsonl, .json, .parquet or .csv files (or a "
        "`datasets` source), not plain text files."
    )
