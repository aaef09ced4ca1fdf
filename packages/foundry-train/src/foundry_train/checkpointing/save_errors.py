"""A checkpoint that cannot be written (disk full, file-size limit, quota) as one clear error.

composer's ``CheckpointSaver`` writes checkpoints with ``torch.save``; when the disk fills up the
user would get torch's ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos
...`` from deep inside ``Trainer.fit``. :func:`checkpoint_write_errors` watches the saver (its
``run_event``, the one entry point composer's engine calls, is wrapped on that one instance) and
turns a write failure raised *while the saver ran* into a :class:`FoundryError` naming the save
folder, the free space there, how far the checkpoint got and the fixes. A failure anywhere else
(a data loader, a metrics file, a plot) is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from composer import Trainer
from composer.callbacks import CheckpointSaver

from foundry_train.checkpointing.resume import INCOMPLETE_DIR, checkpoint_batch
from foundry_train.errors import FoundryError

__all__ = ["checkpoint_write_errors", "write_failure_reason"]

_GIB = 1024**3
_REASONS = {
    errno.ENOSPC: "the disk is full (No space left on device)",
    errno.EFBIG: "the file grew past the file-size limit (File too large)",
    errno.EDQUOT: "the disk quota is used up (Disk quota exceeded)",
}
# What torch's zip writer (caffe2's PyTorchStreamWriter) raises when a write comes up short.
_TORCH_WRITE_FAILURES = (
    "unexpected pos",
    "file write failed",
    "PytorchStreamWriter failed writing",
)


class _SaveWatch:
    """The exception the checkpoint saver raised (if any), when that save began and where."""

    def __init__(self) -> None:
        self.failure: BaseException | None = None
        self.started = 0.0
        self.folder: str | None = None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or while handling."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]


def write_failure_reason(exc: BaseException) -> str | None:
    """Why a file could not be written, when ``exc`` (or one in its chain) says so: an OSError
    ENOSPC / EFBIG / EDQUOT, or torch's zip writer coming up short. None for anything else."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, OSError) and e.errno in _REASONS:
            return _REASONS[e.errno]
    for e in chain:
        text = str(e)
        if isinstance(e, RuntimeError) and any(m in text for m in _TORCH_WRITE_FAILURES):
            line = text.strip().splitlines()[0]
            return f"torch could not write the file ({line})"
    return None


def _watch(saver: CheckpointSaver, watch: _SaveWatch) -> None:
    """Record in ``watch`` any exception ``saver`` raises while composer runs it on an event."""
    run_event: Callable[..., Any] = saver.run_event

    def watched(*args: Any, **kwargs: Any) -> Any:
        started = time.time()
        try:
            return run_event(*args, **kwargs)
        except BaseException as exc:
            watch.failure, watch.started, watch.folder = exc, started, str(saver.folder)
            raise

    saver.run_event = watched  # this instance only; its class (and checkpoint state) unchanged


def _free_gib(folder: str) -> str:
    """Free space on the filesystem that holds ``folder`` (its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return f"{shutil.disk_usage(path).free / _GIB:.1f} GiB"
    except OSError:
        return "an unknown amount"


def _size(n: int) -> str:
    if n >= _GIB:
        return f"{n / _GIB:.2f} GiB"
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.0f} KiB"


def _partial(folder: str, since: float) -> str:
    """How far the interrupted save got: the newest checkpoint in ``folder`` (a file, or a
    sharded checkpoint's folder) written since the save began; empty when none is found."""
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(OSError):
        for p in Path(folder).iterdir():
            batch = checkpoint_batch(p)
            if batch is not None and not p.is_symlink() and p.stat().st_mtime >= since - 1:
                found.append((batch, p))
    if not found:
        return ""
    path = max(found)[1]
    with contextlib.suppress(OSError):
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
        size = _size(sum(f.stat().st_size for f in files))
        return f" The incomplete checkpoint {path.name} had reached {size}."
    return ""


def _fixes(reason: str, remote: bool, keep: int) -> str:
    """What to do about it; every config key named exists in TrainConfig."""
    where = (
        "set TMPDIR to a folder on a larger disk or free space there"
        if remote
        else "free space on that disk, point save_folder at a larger disk or at an object store "
        "(s3://bucket/path)"
    )
    kept = f"{keep}: all are kept" if keep < 0 else str(keep)
    fixes = f"{where}, or keep fewer checkpoints with save_num_checkpoints_to_keep (now {kept})"
    if reason == _REASONS[errno.EFBIG]:
        fixes += ", or raise the file-size limit (ulimit -f)"
    elif reason == _REASONS[errno.EDQUOT]:
        fixes += ", or ask for a larger quota"
    return fixes


def _message(reason: str, save_folder: str, local: str, partial: str, keep: int) -> str:
    remote = "://" in save_folder
    staged = f" (staged in the local folder '{local}' for upload)" if remote else ""
    aside = (
        "with autoresume: true the next run moves it into "
        f"'{Path(local) / INCOMPLETE_DIR}' and resumes from the newest complete checkpoint"
        if not remote
        else "it is never uploaded, and with autoresume: true the next run resumes from the "
        "newest complete checkpoint in the object store"
    )
    return (
        f"could not write a checkpoint to save_folder '{save_folder}'{staged}: {reason}; the "
        f"filesystem there has {_free_gib(local)} free.{partial} An incomplete checkpoint is "
        f"never resumed from: {aside}. To fix it, {_fixes(reason, remote, keep)}; then run again."
    )


@contextlib.contextmanager
def checkpoint_write_errors(
    trainer: Trainer, save_folder: str | None, keep: int = -1
) -> Generator[None, None, None]:
    """Run the body (``trainer.fit()``); a checkpoint write failure becomes a FoundryError.

    ``save_folder`` is the config's (named in the message), ``keep`` its
    ``save_num_checkpoints_to_keep``.
    """
    watch = _SaveWatch()
    for callback in trainer.state.callbacks:
        if isinstance(callback, CheckpointSaver):
            _watch(callback, watch)
    try:
        yield
    except Exception as exc:
        failure = watch.failure
        reason = None if failure is None else write_failure_reason(failure)
        if failure is None or reason is None or failure not in set(_chain(exc)):
            raise
        local = watch.folder or save_folder or "."
        partial = _partial(local, watch.started)
        raise FoundryError(_message(reason, save_folder or local, local, partial, keep)) from exc
