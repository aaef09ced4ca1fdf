"""What every conversion does around its own loop: read the source, set up the output, open the
writer and the progress bar, and clean up if anything goes wrong.

``convert`` and ``convert-finetuning`` differ in how they turn records into samples, not in how
they run::

    with ConversionRun(options, desc="convert") as run:  # resolves SOURCE, prepares OUT
        tok = ...                       # a failure from here on removes what the run wrote
        writer, progress = run.start(COLUMNS)  # the writer; the progress bar shows from now on
        for unit, num_bytes in iter_units(run.source, ...):
            ...
            progress.update(...)
        writer.finish(lambda: manifest)
    # leaving the block closes the progress bar; on an error it also removes the output
"""

from __future__ import annotations

from types import TracebackType
from typing import Literal, Protocol

from foundry_data.manifest import SourceInfo
from foundry_data.output import DatasetWriter, prepare_output
from foundry_data.progress import ConversionProgress
from foundry_data.sources import resolve_source

__all__ = ["ConversionOptions", "ConversionRun"]


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


class ConversionRun:
    """A conversion's source, output, writer and progress bar; a context manager that removes
    the output (local staging folder, or the uploads' local side) when the block raises.

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

    def start(self, columns: dict[str, str]) -> tuple[DatasetWriter, ConversionProgress]:
        """Open the dataset writer and show the progress bar."""
        self.writer = DatasetWriter(
            self.target,
            columns=columns,
            compression=self.options.compression,
            hashes=self.options.hashes,
            size_limit=self.options.shard_size,
        )
        self.progress = ConversionProgress(
            total_bytes=self.source.total_bytes, enabled=self.options.progress, desc=self.desc
        )
        return self.writer, self.progress

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
        if exc_type is None:
            return
        if self.writer is not None:
            self.writer.abort()
        else:
            self.target.abort()
