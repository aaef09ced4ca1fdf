"""Picking the checkpoint to resume from: the newest *complete* one in the save folder.

Completeness is read from each checkpoint's own contents, never from composer's
``latest-rank0.pt`` pointer (which a crash can leave stale): a full checkpoint is complete when
it is a whole zip whose pickle scans clean, holds composer's state (model, optimizers,
timestamp) and every storage it references; a sharded one when its ``.metadata`` scans clean,
names that state and every file it points into is there and long enough. A checkpoint the
safety scan refuses is never "incomplete": it raises :class:`CheckpointSecurityError` and stays
where it is. Nothing complete is ever removed; an incomplete checkpoint newer than the one
resumed from is moved into ``incomplete/`` (so the resumed run can save under its name) and
deleted only once a complete checkpoint at least as new exists.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, cast

from foundry_train.errors import CheckpointSecurityError

__all__ = [
    "checkpoint_batch",
    "is_complete",
    "find_latest_checkpoint",
    "set_aside_incomplete",
    "remember_earlier_checkpoints",
    "INCOMPLETE_DIR",
]

log = logging.getLogger(__name__)

_FULL = re.compile(r"^ep(\d+)-ba(\d+)-rank0\.pt$")
_SHARDED = re.compile(r"^ep(\d+)-ba(\d+)$")
_ASIDE = re.compile(r"^ep\d+-ba(\d+)(-rank0\.pt)?(\.\d+)?$")  # names in incomplete/
LATEST_NAME = "latest-rank0.pt"
INCOMPLETE_DIR = "incomplete"
_STATE_KEYS = ("model", "optimizers", "timestamp")


def checkpoint_batch(path: Path) -> int | None:
    """The batch number in a composer checkpoint name (``ep0-ba8-rank0.pt`` or ``ep0-ba8``)."""
    m = _FULL.match(path.name) or _SHARDED.match(path.name)
    return int(m.group(2)) if m else None


def _complete_sharded(directory: Path) -> bool:
    from foundry_train.checkpointing.safety import load_dcp_metadata, scan_checkpoint

    try:
        meta: Any = load_dcp_metadata(directory)
    except CheckpointSecurityError:
        raise
    except Exception:  # no or a corrupt .metadata: a save that did not finish
        return False
    for info in meta.storage_data.values():
        f = directory / info.relative_path
        if f.parent != directory or f.name in ("", ".", ".."):
            scan_checkpoint(directory)  # an item outside the folder: refused, not incomplete
        if not f.is_file() or f.stat().st_size < info.offset + info.length:
            return False
    fqns = list(meta.state_dict_metadata)
    if not all(any(k.startswith(f"state.{key}") for k in fqns) for key in _STATE_KEYS):
        return False
    scan_checkpoint(directory)  # the pickled items inside the shards
    return True


def _complete_full(path: Path) -> bool:
    from foundry_train.checkpointing.safety import full_checkpoint_skeleton

    try:
        state, missing = full_checkpoint_skeleton(path)
    except CheckpointSecurityError:
        raise
    except Exception:  # a truncated or corrupt zip, or a pickle that does not load
        return False
    inner = cast("dict[str, Any]", state).get("state") if isinstance(state, dict) else None
    return isinstance(inner, dict) and all(k in inner for k in _STATE_KEYS) and not missing


def is_complete(path: Path) -> bool:
    """Whether a checkpoint was written completely, judged from its contents.

    Raises :class:`CheckpointSecurityError` when its pickles are refused: such a file is
    dangerous, not incomplete.
    """
    if path.is_dir():
        return _complete_sharded(path)
    if not path.is_file():
        return False
    return _complete_full(path)


def _candidates(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if checkpoint_batch(p) is not None]
    return sorted(found, key=lambda p: checkpoint_batch(p) or 0, reverse=True)


def find_latest_checkpoint(save_folder: str | Path) -> Path | None:
    """The newest complete checkpoint in ``save_folder`` by batch number, or None.

    ``latest-rank0.pt`` is not consulted. Raises :class:`CheckpointSecurityError` when a
    checkpoint newer than every complete one is refused by the safety scan.
    """
    folder = Path(save_folder)
    if not folder.is_dir():
        return None
    for candidate in _candidates(folder):
        if is_complete(candidate):
            return candidate
        log.warning("skipping incomplete checkpoint %s", candidate)
    return None


def _move_aside(candidate: Path) -> Path:
    aside = candidate.parent / INCOMPLETE_DIR
    aside.mkdir(exist_ok=True)
    target, n = aside / candidate.name, 0
    while target.exists() or target.is_symlink():
        n += 1
        target = aside / f"{candidate.name}.{n}"
    os.replace(candidate, target)
    return target


def set_aside_incomplete(save_folder: str | Path, batch: int) -> list[tuple[Path, Path]]:
    """Move the incomplete checkpoints later than ``batch`` (the one resumed from, 0 for none)
    into ``incomplete/``; delete those already there that a complete checkpoint at ``batch``
    supersedes. Returns the (from, to) moves. A complete checkpoint is never moved."""
    folder = Path(save_folder)
    if not folder.is_dir():
        return []
    aside = folder / INCOMPLETE_DIR
    if batch > 0 and aside.is_dir():
        for old in aside.iterdir():
            m = _ASIDE.match(old.name)
            if m is None or int(m.group(1)) > batch:
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
                log.info(
                    "deleted %s: the complete checkpoint of batch %d supersedes it", old, batch
                )
    moved: list[tuple[Path, Path]] = []
    for candidate in _candidates(folder):
        b = checkpoint_batch(candidate)
        if b is not None and b > batch and not is_complete(candidate):
            moved.append((candidate, _move_aside(candidate)))
    return moved


def remember_earlier_checkpoints(trainer: Any, save_folder: str, resumed_from: str) -> None:
    """Hand a resumed run's checkpoint savers the checkpoints already in ``save_folder`` (those
    up to the one resumed from, oldest first), so ``save_num_checkpoints_to_keep`` rotates them
    out too. composer's saver starts each process with an empty list, so every restart left one
    more checkpoint on disk. Rank 0 only: it is the rank that deletes them."""
    from composer.callbacks import CheckpointSaver
    from composer.utils import dist

    resumed = checkpoint_batch(Path(resumed_from))
    folder = Path(save_folder)
    if dist.get_global_rank() != 0 or resumed is None or not folder.is_dir():
        return
    earlier = sorted(
        (p for p in folder.iterdir() if (checkpoint_batch(p) or resumed + 1) <= resumed),
        key=lambda p: checkpoint_batch(p) or 0,
    )
    # composer deletes a full checkpoint's file, and a sharded one's parent folder of the path
    paths = [str(p / ".metadata") if p.is_dir() else str(p) for p in earlier]
    for saver in (cb for cb in trainer.state.callbacks if isinstance(cb, CheckpointSaver)):
        saver.saved_checkpoints = [*paths, *saver.saved_checkpoints]
