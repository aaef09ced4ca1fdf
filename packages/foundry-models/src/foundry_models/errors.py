"""Errors raised by foundry-models.

`FoundryError` is a user error (bad config, missing optional package, unsupported checkpoint):
callers print its one-paragraph message without a traceback. Anything else is a bug.
"""

from __future__ import annotations

__all__ = ["AttentionUnavailableError", "ExportError", "FoundryError", "MPTConfigError"]


class FoundryError(Exception):
    """A user error: the message says what was wrong and how to fix it."""


class MPTConfigError(FoundryError, ValueError):
    """An invalid or inconsistent `MPTConfig`."""


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
