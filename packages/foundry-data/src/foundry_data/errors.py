"""User-facing errors of foundry-data.

A :class:`FoundryError` means the user gave something we cannot work with (a missing file, a
malformed record, an unknown tokenizer, an output that already exists). The command line prints its
message as one paragraph, without a traceback, and exits with status 2. Anything else escaping is a
bug in foundry-data.
"""

from __future__ import annotations

__all__ = ["ConversionInterrupted", "FoundryError", "first_line"]


class FoundryError(Exception):
    """A user error: its message says what was wrong and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[FoundryError], tuple[str]]:
        # Keep the message when the error crosses a process boundary (worker -> main).
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.message


class ConversionInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a conversion whose finished shards were kept so that it can resume; the
    message says where they are and how to go on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def first_line(exc: BaseException, *, empty: str = "(no message)") -> str:
    """The first line of ``exc``'s message, to quote a library's error inside one of ours;
    ``empty`` when the message is blank."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else empty
