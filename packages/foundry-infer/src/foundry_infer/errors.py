"""User-facing errors of foundry-infer.

A :class:`FoundryError` means the user gave something we cannot work with (a missing model
directory, an output that already exists, a prompt longer than the model can take). The command
line prints its message as one paragraph, without a traceback, and exits with status 2. Anything
else escaping is a bug in foundry-infer.
"""

from __future__ import annotations

__all__ = ["ExportError", "FoundryError"]


class FoundryError(Exception):
    """A user error: its message says what was wrong and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[FoundryError], tuple[str]]:
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.message


class ExportError(FoundryError):
    """The ONNX export could not be made, or the exported graph disagrees with torch."""
