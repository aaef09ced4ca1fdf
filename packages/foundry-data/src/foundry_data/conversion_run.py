"""What every conversion does around its own loop: read the source, set up the output, open the
writer and the progress bar, resume a killed run, and clean up if anything goes wrong.

``convert`` and ``convert-finetuning`` differ in how they turn records into samples, not in how
they run::

    with ConversionRun(options, desc="convert") as run:  # resolves SOURCE, prepares OUT
        tok = ...                       # a failure from here on removes what the run wrote
        writer, progress = run.start(COLUMNS, identity={"tokenizer": ...})
        state = run.resumed_state       # the killed run's state to restore, or None
        for unit, num_bytes in run.units(text_column=...):  # skips the units already done
            run.unit_started(snapshot)  # what to restore to redo this unit
            ...                         # writer.write(sample) for each sample
            progress.update(...)
        writer.finish(lambda: manifest)
    # leaving the block closes the progress bar; on an error it also removes the output, on
    # Ctrl-C it keeps the finished shards for the next run to resume from

Resuming (local OUT only): a killed run's work folder is continued when its resume record
(:mod:`foundry_data.resume`) says it was made by an identical conversion: same source files
(sizes and modification times), same tokenizer, same options that change the output bytes.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from foundry_data import sources
from foundry_data.errors import ConversionInterrupted
from foundry_data.manifest import SourceInfo
from foundry_data.output import DatasetWriter, prepare_output
from foundry_data.progress import ConversionProgress, human_bytes, human_count
from foundry_data.records import Unit
from foundry_data.resume import (
    ResumeLog,
    ResumePosition,
    ResumeRecord,
    drop_unlisted_files,
    identity_difference,
    missing_shard,
    read_resume_record,
)
from foundry_data.sources import iter_units, resolve_source

__all__ = ["ConversionOptions", "ConversionRun", "ConversionState"]

_NOT_IN_OUTPUT = frozenset(
    {"out", "overwrite", "local", "progress", "workers", "resume", "tokenizer", "chat_template"}
)
"""Options that do not change the output bytes (the tokenizer and chat template count by their
contents, which the conversion puts in the identity)."""


class ConversionOptions(Protocol):
    """The options every conversion takes (``PretrainingOptions``, ``FinetuningOptions``)."""

    @property
    def source(self) -> str: ...
    @property
    def out(self) -> str: ...
    @property
    def reader(self) -> Literal["auto", "datasets"]: ...
    @property
    def subset(self) -> str | None: ...
    @property
    def split(self) -> str: ...
    @property
    def compression(self) -> str | None: ...
    @property
    def hashes(self) -> list[str]: ...
    @property
    def shard_size(self) -> int: ...
    @property
    def overwrite(self) -> bool: ...
    @property
    def local(self) -> str | None: ...
    @property
    def progress(self) -> bool: ...
    @property
    def resume(self) -> bool: ...


class ConversionState(Protocol):
    """A conversion's own state at the start of a unit (taken cheaply, serialized only when a
    shard closes)."""

    def to_json(self) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class _UnitStart:
    index: int
    documents: int
    tokens: int
    num_bytes: int
    samples_seen: int
    state: ConversionState


class ConversionRun:
    """A conversion's source, output, writer and progress bar; a context manager that removes
    the output (local staging folder, or the uploads' local side) when the block raises, except
    on Ctrl-C once a shard is finished: then it keeps the local work folder for the next run to
    resume, and raises :class:`ConversionInterrupted` saying so.

    Creating it resolves SOURCE and prepares OUT, either of which raises FoundryError on bad
    input before anything needs cleaning up.
    """

    def __init__(self, options: ConversionOptions, *, desc: str) -> None:
        self.options = options
        self.desc = desc
        self.source = resolve_source(
            options.source, reader=options.reader, subset=options.subset, split=options.split
        )
        self.target = prepare_output(options.out, overwrite=options.overwrite, local=options.local)
        self.writer: DatasetWriter | None = None
        self.progress = ConversionProgress(total_bytes=None, enabled=False, desc=desc)
        self.resumed: ResumeRecord | None = None
        self._log: ResumeLog | None = None
        self._next_unit = 0
        self._unit: _UnitStart | None = None

    def start(
        self, columns: dict[str, str], *, identity: dict[str, Any]
    ) -> tuple[DatasetWriter, ConversionProgress]:
        """Resume a killed identical run or start afresh; open the dataset writer and show the
        progress bar.

        ``identity``: what decides the output besides SOURCE, the options and ``columns`` (a
        hash of the tokenizer, of the chat template); JSON values.
        """
        full_identity = self._identity(columns, identity)
        record = self._take_over_leftovers(full_identity)
        position = record.position if record is not None else None
        if self.target.remote is None:
            self._log = ResumeLog(self.target.staging, full_identity, record)
        self.resumed = record
        self._next_unit = position.units_done if position is not None else 0
        self.writer = DatasetWriter(
            self.target,
            columns=columns,
            compression=self.options.compression,
            hashes=self.options.hashes,
            size_limit=self.options.shard_size,
            shards=record.shards if record is not None else None,
            skip_samples=position.skip_samples if position is not None else 0,
            on_shard_closed=self._shard_closed if self._log is not None else None,
            before_publish=self._log.remove if self._log is not None else None,
        )
        done = (position.documents, position.tokens, position.num_bytes) if position else (0, 0, 0)
        self.progress = ConversionProgress(
            total_bytes=self.source.total_bytes,
            enabled=self.options.progress,
            desc=self.desc,
            done=done,
        )
        return self.writer, self.progress

    @property
    def resumed_state(self) -> dict[str, Any] | None:
        """The conversion state to restore when resuming (from :meth:`ConversionState.to_json`)."""
        return self.resumed.position.state if self.resumed is not None else None

    def units(
        self, *, text_column: str | None, txt_unit: Literal["file", "line"] = "file"
    ) -> Iterator[tuple[Unit, int]]:
        """The source's units, less those a resumed run already consumed (read, not processed)."""
        units = iter_units(self.source, text_column=text_column, txt_unit=txt_unit)
        return itertools.islice(units, self._next_unit, None)

    def unit_started(self, state: ConversionState) -> None:
        """Call before writing any sample of the next unit, with the state that redoes it."""
        assert self.writer is not None, "start() first"
        progress = self.progress
        self._unit = _UnitStart(
            self._next_unit,
            progress.documents,
            progress.tokens,
            progress.bytes,
            self.writer.samples_seen,
            state,
        )
        self._next_unit += 1

    def _shard_closed(self, entry: dict[str, Any]) -> None:
        assert self._log is not None and self.writer is not None and self._unit is not None
        unit = self._unit
        position = ResumePosition(
            fingerprint=self._log.fingerprint,
            units_done=unit.index,
            skip_samples=self.writer.closed_samples - unit.samples_seen,
            num_shards=self.writer.num_shards,
            documents=unit.documents,
            tokens=unit.tokens,
            num_bytes=unit.num_bytes,
            state=unit.state.to_json(),
        )
        self._log.shard_closed(entry, position)

    def _identity(self, columns: dict[str, str], extra: dict[str, Any]) -> dict[str, Any]:
        from foundry_data import __version__

        if not dataclasses.is_dataclass(self.options):
            raise TypeError("conversion options must be a dataclass")
        options = {
            name: value
            for name, value in dataclasses.asdict(self.options).items()
            if name not in _NOT_IN_OUTPUT
        }
        source = self.source
        files = [[str(Path(f.path).absolute()), *_size_and_mtime(f.path)] for f in source.files]
        return {
            "kind": self.desc,
            "foundry_data_version": __version__,
            "source": {
                "spec": source.spec,
                "reader": source.reader,
                "subset": source.subset,
                "split": source.split,
                "files": files,
            },
            "options": options,
            "units": [sources.BLOCK_BYTES, sources.RECORDS_PER_UNIT],  # where units are cut
            "columns": columns,
            **extra,
        }

    def _take_over_leftovers(self, identity: dict[str, Any]) -> ResumeRecord | None:
        """Continue in the newest killed run's work folder if it can be; remove the others."""
        leftovers = self.target.leftovers
        self.target.leftovers = []
        if not leftovers:
            return None
        newest, older = leftovers[0], leftovers[1:]
        for path in older:
            shutil.rmtree(path, ignore_errors=True)
        if self.target.remote is not None:
            reason = "resume is for local outputs only (an object-store upload starts over)"
        elif not self.options.resume:
            reason = "--no-resume was given"
        else:
            found = read_resume_record(newest)
            reason = found if isinstance(found, str) else _why_not(newest, found, identity)
            if not reason:
                assert isinstance(found, ResumeRecord)
                return self._adopt(newest, found)
        shutil.rmtree(newest, ignore_errors=True)
        _say(f"not resuming the killed run in {newest}: {reason}; starting over.")
        return None

    def _adopt(self, leftover: Path, record: ResumeRecord) -> ResumeRecord | None:
        drop_unlisted_files(leftover, record.shards)
        try:
            os.replace(leftover, self.target.staging)
        except OSError as exc:  # another run took it first
            _say(f"not resuming the killed run in {leftover}: {exc.strerror}; starting over.")
            return None
        position = record.position
        words = "documents" if self.desc == "convert" else "records"
        _say(
            f"resuming the killed run in {leftover.name}: {len(record.shards):,} shards "
            f"({record.num_samples:,} samples) already done, {position.documents:,} {words}, "
            f"{human_count(position.tokens)} tokens, {human_bytes(position.num_bytes)} of input; "
            "continuing from there (--no-resume starts over)."
        )
        return record

    def source_info(self, text_column: str | None = None) -> SourceInfo:
        """The manifest's record of where the text came from."""
        source = self.source
        return SourceInfo(
            spec=source.spec,
            reader=source.reader,
            num_files=len(source.files) if source.files else None,
            text_column=text_column,
            subset=source.subset,
            split=source.split if not source.files else None,
        )

    def __enter__(self) -> ConversionRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.progress.close()
        if self._log is not None:
            self._log.close()
        if exc_type is None:
            return
        stopped = issubclass(exc_type, KeyboardInterrupt | SystemExit)
        if stopped and self._log is not None and self._log.resumable:
            message = (
                f"interrupted: the {self._log.num_shards:,} finished shards are kept in "
                f"{self.target.staging}; run the same command again to resume from there (or "
                "pass --no-resume to start over)."
            )
            if issubclass(exc_type, KeyboardInterrupt):
                raise ConversionInterrupted(message) from None
            # SystemExit: a signal handler stops the process (importing composer installs one
            # for SIGINT and SIGTERM); keep the work and let the exit go on.
            _say(message)
            return
        if self.writer is not None:
            self.writer.abort()
        else:
            self.target.abort()


def _size_and_mtime(path: str) -> list[int]:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def _why_not(leftover: Path, record: ResumeRecord, identity: dict[str, Any]) -> str | None:
    """Why ``record`` cannot be continued by this run, or None."""
    return identity_difference(record.identity, identity) or missing_shard(leftover, record.shards)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
