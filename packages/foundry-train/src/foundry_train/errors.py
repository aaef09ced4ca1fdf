"""User-facing errors of foundry-train."""

from __future__ import annotations

from typing import ClassVar

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
