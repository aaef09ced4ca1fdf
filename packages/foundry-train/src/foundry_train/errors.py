"""User-facing errors of foundry-train."""

from __future__ import annotations

__all__ = ["FoundryError", "ConfigError", "CheckpointSecurityError"]


class FoundryError(Exception):
    """A user error (bad input, bad config, missing file); the CLI prints it as one paragraph."""


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
