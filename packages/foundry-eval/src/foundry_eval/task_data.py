"""Task data on demand: llm-foundry's published ICL task files, downloaded into a cache folder.

Nothing third-party ships with foundry-eval. When no data root is given, the files the selected
tasks need are downloaded from llm-foundry's ``scripts/eval/local_data`` folder at a pinned tag
(override the base URL with ``FOUNDRY_EVAL_TASK_URL`` or ``--task-url``, e.g. for a mirror) into
``$XDG_CACHE_HOME/foundry/eval-data`` (``~/.cache/foundry/eval-data``), keeping llm-foundry's
relative paths (``world_knowledge/arc_easy.jsonl``). Each file is written under a temporary
name and renamed when complete, so an interrupted download never leaves a partial file.
"""

from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from foundry_eval.config import TaskConfig, relative_data_path
from foundry_eval.errors import FoundryError

__all__ = [
    "DEFAULT_TASK_URL",
    "LLM_FOUNDRY_REF",
    "default_cache_dir",
    "ensure_task_files",
    "fetch_task_files",
    "task_url",
    "task_relpaths",
]

# The llm-foundry release whose task files the shipped gauntlet was written against.
LLM_FOUNDRY_REF = "v0.10.0"
DEFAULT_TASK_URL = f"https://raw.githubusercontent.com/mosaicml/llm-foundry/{LLM_FOUNDRY_REF}/scripts/eval/local_data"
_CHUNK = 1 << 16


def task_url(override: str | None = None) -> str:
    """The base URL task files are downloaded from: ``override``, ``FOUNDRY_EVAL_TASK_URL``, or
    llm-foundry's published folder at :data:`LLM_FOUNDRY_REF`."""
    return (override or os.environ.get("FOUNDRY_EVAL_TASK_URL") or DEFAULT_TASK_URL).rstrip("/")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/foundry/eval-data``, or ``~/.cache/foundry/eval-data``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "foundry" / "eval-data"


def task_relpaths(tasks: Iterable[TaskConfig]) -> list[str]:
    """The distinct data files of ``tasks``, relative to a data root (absolute paths and URLs,
    which name their own location, are left out)."""
    rels = (relative_data_path(t.dataset_uri) for t in tasks)
    return list(dict.fromkeys(r for r in rels if r is not None))


def _download(url: str, dest: Path, progress: bool) -> None:
    """``url`` into ``dest`` through a temp file in the same folder, renamed when complete.

    Nothing is created on disk until the server has answered.
    """
    with urllib.request.urlopen(url, timeout=60) as resp:
        size = int(resp.headers.get("Content-Length") or 0) or None
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, tqdm(
                total=size, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                leave=False, dynamic_ncols=True,
            ) as bar:  # fmt: skip
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _explain(url: str, exc: Exception, dest_root: Path) -> FoundryError:
    if isinstance(exc, urllib.error.HTTPError):
        what = f"the server answered HTTP {exc.code} ({exc.reason})"
    else:
        reason = getattr(exc, "reason", exc)
        what = f"it could not be reached ({reason}: are you offline?)"
    return FoundryError(
        f"could not download task file {url}: {what}. Download the task files elsewhere and pass "
        f"--data-root DIR (a folder laid out like {dest_root}, e.g. world_knowledge/arc_easy.jsonl), "
        "or set FOUNDRY_EVAL_TASK_URL (or --task-url) to a mirror of llm-foundry's "
        "scripts/eval/local_data."
    )


def fetch_task_files(
    relpaths: Iterable[str],
    dest: str | Path | None = None,
    *,
    base_url: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Download each of ``relpaths`` (``world_knowledge/arc_easy.jsonl``) under ``dest`` (default:
    :func:`default_cache_dir`) unless it is already there; returns the files downloaded."""
    root = Path(dest) if dest is not None else default_cache_dir()
    base = task_url(base_url)
    fetched: list[Path] = []
    for rel in relpaths:
        target = root / rel
        if target.is_file() and not force:
            continue
        url = f"{base}/{urllib.parse.quote(rel)}"
        try:
            _download(url, target, progress)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ValueError) as exc:
            raise _explain(url, exc, root) from None
        except ConnectionError as exc:
            raise _explain(url, exc, root) from None
        except OSError as exc:  # a local write error, not a network one
            raise FoundryError(
                f"could not write {target} ({exc.strerror or exc}). Pick a writable --dest or "
                "set XDG_CACHE_HOME to a writable folder."
            ) from None
        fetched.append(target)
    return fetched


def ensure_task_files(
    tasks: Iterable[TaskConfig], data_root: str | Path, *, progress: bool = True
) -> list[Path]:
    """Download the data files of ``tasks`` that are missing under ``data_root``."""
    return fetch_task_files(task_relpaths(tasks), data_root, progress=progress)
