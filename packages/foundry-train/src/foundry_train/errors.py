"""User-facing errors of foundry-train."""

from __future__ import annotations

from typing import ClassVar

from foundry_data import USER_ERROR_ATTRIBUTE, user_error_message

# The user-error rule (`foundry_user_error` classes and path OSErrors) is foundry-data's: one
# copy for the packages that may import it.
__all__ = [
    "USER_ERROR_ATTRIBUTE",
    "user_error_message",
    "FoundryError",
    "ConfigError",
    "CheckpointSecurityError",
    "DataError",
]


class FoundryError(Exception):
    """A user error (bad input, bad config, missing file); the CLI prints it as one paragraph."""

    foundry_user_error: ClassVar[bool] = True


class ConfigError(FoundryError):
    """The training config is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(
            f"{source} has {count} {noun}:\n{lines}\n"
            "Fix the keys above (see docs/config-reference.md for every key) and run again."
        )


class CheckpointSecurityError(FoundryError):
    """A checkpoint holds pickled objects outside the allow-list; it is never unpickled."""


class DataError(FoundryError):
    """The training data is unusable (a shard fails its hash check, a token is outside the
    vocabulary); the message names the dataset, the shard and the fix.

    Raised inside DataLoader worker processes too: torch re-raises it in the training process
    as ``DataError("Caught DataError in DataLoader worker ...<the worker's traceback>")``, so the
    original one-paragraph message is taken back out of that text.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)
