"""User-facing errors of foundry-eval."""

from __future__ import annotations

__all__ = ["FoundryError"]


class FoundryError(Exception):
    """A user error (bad input, bad config, missing file).

    The CLI prints it as one paragraph (``error: <what>. <how to fix>``) and exits with code 2.
    """
