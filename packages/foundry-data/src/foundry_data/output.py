"""Writing a dataset so that nothing half-written ever looks complete.

Local output: shards go to ``OUT.tmp-<pid>`` beside OUT; ``index.json`` and then the manifest are
written there last and the folder is renamed to OUT. A run that was killed leaves only the
``.tmp-<pid>`` folder; the next run for the same OUT finds it (``OutputTarget.leftovers``) and
either continues from it (:mod:`foundry_data.resume`) or removes it and starts again.

Object-store output (``s3://bucket/prefix`` and the other schemes streaming knows): shards are
written to a local staging folder (``--local`` or a temporary one) and uploaded as each is
finished, with streaming's own uploader; when every shard is up, ``index.json`` is uploaded, then
the manifest. Until then the prefix holds no index, so nothing reads it as a dataset.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from foundry_data.errors import FoundryError, first_line
from foundry_data.manifest import MANIFEST_NAME, DatasetManifest, is_remote, write_manifest
from foundry_data.mds_writer import INDEX_NAME, MDSShardWriter

__all__ = ["DatasetWriter", "OutputTarget", "prepare_output"]

UPLOAD_THREADS = 4


class OutputTarget:
    """Where a dataset goes: a local folder, or an object-store prefix with a local staging
    folder."""

    def __init__(
        self,
        out: str,
        staging: Path,
        final_local: Path | None,
        remote: str | None,
        uploader: Any = None,
        leftovers: list[Path] | None = None,
    ) -> None:
        self.out = out
        self.staging = staging
        self.final_local = final_local
        self.remote = remote
        self.uploader = uploader
        self.leftovers = list(leftovers or [])
        """Work folders of killed runs for the same output, most recently changed first."""

    def abort(self) -> None:
        """Remove what this run wrote locally (the remote prefix still has no index)."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self) -> None:
        """Move the finished local folder into place (replacing an old one, if any)."""
        if self.final_local is None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        final = self.final_local
        if final.exists():
            old = final.with_name(f"{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(self.staging, final)
            _remove(old)
        else:
            os.replace(self.staging, final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_staging(final: Path) -> list[Path]:
    """``FINAL.tmp-<pid>`` folders left by killed runs, most recently changed first; refuse if a
    live run owns one."""
    if not final.parent.is_dir():
        return []
    found: list[Path] = []
    for candidate in final.parent.glob(f"{final.name}.tmp-*"):
        suffix = candidate.name.rsplit(".tmp-", 1)[1]
        if not suffix.isdigit() or not candidate.is_dir():
            continue
        pid = int(suffix)
        # Our own pid: left by an earlier conversion in this process (the Python API, after a
        # Ctrl-C) or by a dead process whose pid we were given; either way no one is writing it.
        if pid != os.getpid() and _pid_alive(pid):
            raise FoundryError(
                f"another process (pid {pid}) is writing {final} right now (its work folder is "
                f"{candidate}). Wait for it to finish, or stop it and run again."
            )
        found.append(candidate)
    return sorted(found, key=_changed_at, reverse=True)


def _changed_at(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _check_local_free(final: Path, overwrite: bool, what: str) -> None:
    if not final.exists():
        return
    if final.is_dir() and not any(final.iterdir()):
        return
    if overwrite:
        return
    kind = "a dataset" if (final / INDEX_NAME).exists() else "a non-empty path"
    raise FoundryError(
        f"{what} {final} already exists ({kind}). Pass --overwrite to replace it, or choose "
        "another output."
    )


def _local_staging(final: Path, overwrite: bool, what: str) -> tuple[Path, list[Path]]:
    _check_local_free(final, overwrite, what)
    leftovers = _dead_staging(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if staging.exists() and staging not in leftovers:  # a file of that name
        _remove(staging)
    return staging, leftovers


def prepare_output(out: str, *, overwrite: bool, local: str | None = None) -> OutputTarget:
    """Check OUT and set up where shards are written. Work folders of killed runs are left in
    place and listed in the target's ``leftovers``: the conversion decides whether it resumes one.

    Raises:
        FoundryError: OUT exists (without ``overwrite``), the object store is unreachable, or a
            live run is writing the same OUT.
    """
    if not is_remote(out):
        if local is not None:
            raise FoundryError("--local is for object-store outputs only (OUT like s3://...).")
        final = Path(out).expanduser().absolute()
        staging, leftovers = _local_staging(final, overwrite, "output")
        return OutputTarget(out, staging, final, None, leftovers=leftovers)
    remote = out.rstrip("/")
    leftovers = []
    if local is not None:
        final_local: Path | None = Path(local).expanduser().absolute()
        staging, leftovers = _local_staging(final_local, overwrite, "--local folder")
    else:
        final_local = None
        staging = Path(tempfile.mkdtemp(prefix="foundry-data-staging-"))
    staging.mkdir(parents=True, exist_ok=True)
    try:
        uploader = _connect(remote, staging, keep_local=final_local is not None)
        _check_remote_free(uploader, remote, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return OutputTarget(out, staging, final_local, remote, uploader, leftovers=leftovers)


def _connect(remote: str, staging: Path, *, keep_local: bool) -> Any:
    from streaming.base.storage.upload import CloudUploader

    try:
        uploader = CloudUploader.get(
            out=(str(staging), remote), keep_local=keep_local, exist_ok=True
        )
        uploader.list_objects()
    except Exception as exc:  # botocore / google / azure errors: report them alike
        endpoint = os.environ.get("S3_ENDPOINT_URL")
        hint = f" (S3_ENDPOINT_URL={endpoint})" if endpoint and remote.startswith("s3://") else ""
        raise FoundryError(
            f"cannot reach the object store for {remote}{hint}: {type(exc).__name__}: "
            f"{first_line(exc)}. Check that the bucket exists, the endpoint is up and the "
            "credentials are set (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, and "
            "S3_ENDPOINT_URL for S3-compatible stores)."
        ) from None
    return uploader


def _top_level(keys: list[str], remote: str) -> list[str]:
    """The keys directly under the prefix of ``remote`` (not in deeper 'folders')."""
    prefix = remote.split("://", 1)[1].partition("/")[2].strip("/")
    start = len(prefix) + 1 if prefix else 0
    return [k for k in keys if "/" not in k[start:]]


def _check_remote_free(uploader: Any, remote: str, overwrite: bool) -> None:
    keys = _top_level(uploader.list_objects() or [], remote)
    finished = [k for k in keys if k.rsplit("/", 1)[-1] in (INDEX_NAME, MANIFEST_NAME)]
    if not finished:
        return  # empty, or shards of an interrupted run: this run replaces them
    if not overwrite:
        raise FoundryError(
            f"{remote} already holds a dataset ({finished[0].rsplit('/', 1)[-1]} is there). "
            "Pass --overwrite to replace it, or choose another prefix."
        )
    client = getattr(uploader, "s3", None)
    if client is None:
        raise FoundryError(
            f"--overwrite of an existing dataset is supported for s3:// outputs; delete {remote} "
            "first, or write to another prefix."
        )
    bucket = remote.split("://", 1)[1].split("/", 1)[0]
    # Index and manifest first: from then on nothing reads the old shards as a dataset. Only the
    # prefix's own files go; datasets in deeper prefixes are left alone.
    for key in finished + [k for k in keys if k not in finished]:
        client.delete_object(Bucket=bucket, Key=key)


class DatasetWriter:
    """An MDS writer whose output appears (locally or remotely) only when it is complete.

    A resumed conversion passes the shards already in the staging folder (``shards``) and the
    number of samples it will produce again before it reaches new ones (``skip_samples``: the
    samples of the unit it redoes that those shards already hold); ``write`` drops those.
    ``on_shard_closed(entry)`` is called with each shard's index entry once its file is written;
    ``before_publish()`` right before the finished dataset is published.
    """

    def __init__(
        self,
        target: OutputTarget,
        *,
        columns: dict[str, str],
        compression: str | None,
        hashes: list[str],
        size_limit: int,
        shards: list[dict[str, Any]] | None = None,
        skip_samples: int = 0,
        on_shard_closed: Callable[[dict[str, Any]], None] | None = None,
        before_publish: Callable[[], None] | None = None,
    ) -> None:
        self.target = target
        self._pool = ThreadPoolExecutor(UPLOAD_THREADS) if target.remote else None
        self._uploads: list[Future[None]] = []
        self._on_shard_closed = on_shard_closed
        self._before_publish = before_publish
        self._skip = skip_samples
        self.closed_samples = sum(int(shard["samples"]) for shard in shards or [])
        """Samples in closed shards."""
        self.samples_seen = self.closed_samples - skip_samples
        """Samples handed to ``write`` (or restored), the dropped ones included."""
        self._writer = MDSShardWriter(
            target.staging,
            columns=columns,
            compression=compression,
            hashes=hashes,
            size_limit=size_limit,
            on_shard=self._shard_closed,
            shards=shards,
        )

    @property
    def num_shards(self) -> int:
        return len(self._writer.shards)

    def write(self, sample: dict[str, Any]) -> None:
        self.samples_seen += 1
        if self._skip:
            self._skip -= 1  # already in a shard the interrupted run closed
            return
        self._writer.write(sample)

    def _shard_closed(self, basename: str) -> None:
        entry = self._writer.shards[-1]
        self.closed_samples += int(entry["samples"])
        if self._pool is not None:
            self._upload(basename)
        if self._on_shard_closed is not None:
            self._on_shard_closed(entry)

    def _upload(self, basename: str) -> None:
        assert self._pool is not None
        self._raise_failed_upload()
        self._uploads.append(self._pool.submit(self.target.uploader.upload_file, basename))

    def _raise_failed_upload(self, wait: bool = False) -> None:
        for future in self._uploads:
            if (wait or future.done()) and future.exception() is not None:
                exc = future.exception()
                assert exc is not None
                raise FoundryError(
                    f"uploading to {self.target.remote} failed: {type(exc).__name__}: "
                    f"{first_line(exc)}. Check the object store and run the command again; it "
                    "starts over and replaces the partial upload."
                )
        self._uploads = [f for f in self._uploads if not f.done()]

    def finish(self, manifest: Callable[[], DatasetManifest]) -> None:
        """Write the last shard and ``index.json``, then the manifest; publish the dataset."""
        if self._skip:
            raise FoundryError(
                f"the source gave {self._skip:,} samples fewer than the interrupted run this one "
                "resumed had written: it changed without its files' sizes or modification times "
                "changing. Run the command again with --no-resume."
            )
        self._writer.finish()
        write_manifest(manifest(), self.target.staging)
        # Last before publishing, so a Ctrl-C up to here still leaves a resumable folder.
        if self._before_publish is not None:
            self._before_publish()
        if self._pool is not None:
            self._raise_failed_upload(wait=True)
            self._pool.shutdown(wait=True)
            self._upload_final(INDEX_NAME)
            self._upload_final(MANIFEST_NAME)
        self.target.commit()

    def _upload_final(self, name: str) -> None:
        try:
            self.target.uploader.upload_file(name)
        except Exception as exc:
            raise FoundryError(
                f"uploading {name} to {self.target.remote} failed: {type(exc).__name__}: "
                f"{first_line(exc)}. Run the command again to finish the dataset."
            ) from None

    def abort(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.target.abort()
