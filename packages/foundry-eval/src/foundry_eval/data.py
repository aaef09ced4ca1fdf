"""Reading task JSONL files (local or object store), with row validation naming file and line."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from foundry_eval.errors import FoundryError

__all__ = ["REQUIRED_FIELDS", "read_task_rows"]

# What each task type needs in every row (llm-foundry's JSONL layouts).
REQUIRED_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "language_modeling": {"context": str, "continuation": str},
    "multiple_choice": {"query": str, "choices": list, "gold": int},
    "schema": {"context_options": list, "continuation": str, "gold": int},
    "generation_task_with_answers": {"context": str, "answer": str},
    "code_evaluation": {"prompt": str, "entry_point": str, "language": str},
}


def _fetch_remote(uri: str) -> Path:
    """Download an object-store file (s3://) to a temp file; needs boto3."""
    if not uri.startswith("s3://"):
        raise FoundryError(
            f"cannot read {uri}: only local paths and s3:// URLs are supported. "
            "Copy the file locally or use an S3-compatible store."
        )
    try:
        import boto3
    except ImportError:
        raise FoundryError(
            f"reading {uri} needs boto3. Install it (pip install 'foundry-eval[s3]')."
        ) from None
    bucket, _, key = uri[len("s3://") :].partition("/")
    client = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None)
    fd, tmp = tempfile.mkstemp(suffix=".jsonl", prefix="foundry-eval-")
    os.close(fd)
    try:
        client.download_file(bucket, key, tmp)
    except Exception as exc:  # botocore raises many types; report them as one user error
        os.unlink(tmp)
        raise FoundryError(
            f"could not download {uri} ({exc}). Check the URL and credentials."
        ) from None
    return Path(tmp)


def _check_row(row: Any, task_type: str, where: str) -> None:
    if not isinstance(row, dict):
        raise FoundryError(f"{where}: expected a JSON object, got {type(row).__name__}.")
    for key, typ in REQUIRED_FIELDS[task_type].items():
        if key not in row:
            raise FoundryError(
                f"{where}: missing field '{key}' needed by {task_type} tasks "
                f"(each row needs {', '.join(REQUIRED_FIELDS[task_type])}). Fix the row or the task's icl_task_type."
            )
        if not isinstance(row[key], typ) or isinstance(row[key], bool):
            raise FoundryError(
                f"{where}: field '{key}' should be {getattr(typ, '__name__', typ)}, "
                f"got {type(row[key]).__name__}. Fix the row."
            )
    if task_type in ("multiple_choice", "schema"):
        options = row["choices" if task_type == "multiple_choice" else "context_options"]
        if len(options) < 2 or not all(isinstance(o, str) for o in options):
            raise FoundryError(f"{where}: needs at least two string options. Fix the row.")
        if task_type == "multiple_choice" and any(not o.strip() for o in options):
            empty = [i for i, o in enumerate(options) if not o.strip()]
            raise FoundryError(
                f"{where}: choice {empty[0]} is empty (or only whitespace); an answer choice "
                "needs text to score (and acc_norm divides by its length). Fix the row."
            )
        if not 0 <= row["gold"] < len(options):
            raise FoundryError(
                f"{where}: gold={row['gold']} is outside 0..{len(options) - 1}. Fix the row."
            )


def read_task_rows(path: str, task_type: str) -> list[dict[str, Any]]:
    """All rows of a task file, validated for ``task_type``."""
    local = _fetch_remote(path) if "://" in path else Path(path)
    if not local.is_file():
        raise FoundryError(f"task file {path} does not exist. Check --data-root.")
    rows: list[dict[str, Any]] = []
    with local.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FoundryError(f"{where}: not valid JSON ({exc.msg}). Fix the row.") from None
            _check_row(row, task_type, where)
            rows.append(row)
    if not rows:
        raise FoundryError(
            f"task file {path} has no rows. Point the task at a non-empty JSONL file."
        )
    return rows
