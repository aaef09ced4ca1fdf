"""Errors raised by foundry-models.

`FoundryError` is a user error (bad config, missing optional package, unsupported checkpoint):
callers print its one-paragraph message without a traceback. Anything else is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "USER_ERROR_ATTRIBUTE",
    "user_error_message",
    "AttentionUnavailableError",
    "ExportError",
    "FoundryError",
    "MPTConfigError",
    "OptionProblem",
]


class FoundryError(Exception):
    """A user error: the message says what was wrong and how to fix it."""

    foundry_user_error: ClassVar[bool] = True


@dataclass(frozen=True)
class OptionProblem:
    """One invalid MPT option: its dotted key (`attn_config.attn_impl`), what was expected, what
    was given, and a hint (a did-you-mean, or how to fix it). `unknown` marks an unknown key."""

    key: str
    expected: str
    given: object
    hint: str = ""
    unknown: bool = False

    def describe(self) -> str:
        """The problem without its key and given value (for callers that print those)."""
        if self.unknown:
            hint = f" ({self.hint})" if self.hint else ""
            return f"unknown key{hint}; {self.expected}" if self.expected else f"unknown key{hint}"
        text = f"expected {self.expected}"
        return f"{text} ({self.hint})" if self.hint else text

    def __str__(self) -> str:
        where = self.key or "options"
        if self.unknown:
            return f"{where}: {self.describe()}"
        text = f"{where}: expected {self.expected}, got {self.given!r}"
        return f"{text} ({self.hint})" if self.hint else text


class MPTConfigError(FoundryError, ValueError):
    """Invalid or inconsistent MPT options; `problems` lists each one (empty for other errors)."""

    def __init__(self, message: str, problems: list[OptionProblem] | None = None) -> None:
        self.problems: list[OptionProblem] = list(problems or [])
        super().__init__(message)

    @classmethod
    def from_problems(cls, problems: list[OptionProblem]) -> MPTConfigError:
        count = len(problems)
        return cls(
            f"invalid MPT options ({count} problem{'s' if count != 1 else ''}): "
            + "; ".join(str(p) for p in problems)
            + ". Fix these options and try again.",
            problems,
        )


class AttentionUnavailableError(FoundryError, RuntimeError):
    """The requested attention implementation cannot run here (package or hardware missing)."""


class ExportError(FoundryError):
    """A model cannot be written as (or read from) a native transformers architecture.

    `blockers` lists every option that prevents it, one human-readable line each.
    """

    def __init__(self, message: str, blockers: list[str] | None = None) -> None:
        self.blockers: list[str] = list(blockers or [])
        if self.blockers:
            message = message + " Blocking options: " + "; ".join(self.blockers) + "."
        super().__init__(message)


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
