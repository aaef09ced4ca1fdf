"""User-facing errors of foundry-data.

A :class:`FoundryError` means the user gave something we cannot work with (a missing file, a
malformed record, an unknown tokenizer, an output that already exists). The command line prints its
message as one paragraph, without a traceback, and exits with status 2. Anything else escaping is a
bug in foundry-data.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "USER_ERROR_ATTRIBUTE",
    "user_error_message",
    "ConversionInterrupted",
    "FoundryError",
    "first_line",
]


class FoundryError(Exception):
    """A user error: its message says what was wrong and how to fix it."""

    foundry_user_error: ClassVar[bool] = True

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


# Every Foundry package's user-error base class sets this attribute. A command line recognises
# another package's user errors by it, without importing that package (docs/CONTRIBUTING.md).
USER_ERROR_ATTRIBUTE = "foundry_user_error"

_PATH_HINTS: tuple[tuple[type[OSError], str], ...] = (
    (FileExistsError, "something already exists there; remove it or choose another path"),
    (FileNotFoundError, "it does not exist; check the path"),
    (NotADirectoryError, "a part of the path is a file, not a folder; check the path"),
    (IsADirectoryError, "it is a folder where a file was expected; give a file's path"),
    (PermissionError, "permission denied; check its permissions or choose another path"),
)


def user_error_message(exc: BaseException) -> str | None:
    """The one-paragraph message of a user error, or None when ``exc`` is a bug.

    A user error is an error of any Foundry package (its class has ``foundry_user_error = True``)
    or an OSError about a path: exists, not found, not a folder, is a folder, no permission.
    """
    if getattr(exc, USER_ERROR_ATTRIBUTE, False) is True:
        return str(exc)
    for kind, hint in _PATH_HINTS:
        if isinstance(exc, kind):
            if exc.filename is None:
                return str(exc) or hint
            where = f"'{exc.filename}'" + (f" -> '{exc.filename2}'" if exc.filename2 else "")
            return f"{where}: {hint}."
    return None
