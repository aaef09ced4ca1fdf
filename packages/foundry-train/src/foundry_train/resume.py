"""Picking the checkpoint to resume from: the newest *complete* one in the save folder."""

from __future__ import annotations

import logging
import re
import shutil
import zipfile
from pathlib import Path

__all__ = ["checkpoint_batch", "is_complete", "find_latest_checkpoint", "remove_newer_than"]

log = logging.getLogger(__name__)

_FULL = re.compile(r"^ep(\d+)-ba(\d+)-rank0\.pt$")
_SHARDED = re.compile(r"^ep(\d+)-ba(\d+)$")
LATEST_NAME = "latest-rank0.pt"


def checkpoint_batch(path: Path) -> int | None:
    """The batch number in a composer checkpoint name (``ep0-ba8-rank0.pt`` or ``ep0-ba8``)."""
    m = _FULL.match(path.name) or _SHARDED.match(path.name)
    return int(m.group(2)) if m else None


def _complete_sharded(directory: Path) -> bool:
    from foundry_train.checkpoint_safety import load_dcp_metadata

    try:
        meta = load_dcp_metadata(directory)
    except Exception:
        return False
    for info in meta.storage_data.values():
        f = directory / info.relative_path
        if not f.is_file() or f.stat().st_size < info.offset + info.length:
            return False
    return True


def is_complete(path: Path) -> bool:
    """Whether a checkpoint was written completely (zip central directory / DCP metadata)."""
    if path.is_dir():
        return _complete_sharded(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("data.pkl") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _candidates(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if checkpoint_batch(p) is not None]
    return sorted(found, key=lambda p: checkpoint_batch(p) or 0, reverse=True)


def find_latest_checkpoint(save_folder: str | Path) -> Path | None:
    """The checkpoint autoresume should load, or None when there is none.

    composer's ``latest-rank0.pt`` symlink is trusted only when its target is complete; when it
    is missing or dangling (a crash between removing and re-creating it) or its target is
    half-written, the newest complete checkpoint by batch number is taken.
    """
    folder = Path(save_folder)
    if not folder.is_dir():
        return None
    link = folder / LATEST_NAME
    if link.is_symlink() or link.exists():
        target = link.resolve()
        if target.exists() and is_complete(target):
            return target
        log.warning("%s points to an incomplete checkpoint; searching the folder", link)
    for candidate in _candidates(folder):
        if is_complete(candidate):
            return candidate
        log.warning("skipping incomplete checkpoint %s", candidate)
    return None


def remove_newer_than(save_folder: str | Path, batch: int) -> list[Path]:
    """Delete (incomplete) checkpoints later than ``batch`` so the resumed run can re-save them."""
    removed: list[Path] = []
    for candidate in _candidates(Path(save_folder)):
        b = checkpoint_batch(candidate)
        if b is not None and b > batch:
            if candidate.is_dir():
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
            removed.append(candidate)
    return removed
