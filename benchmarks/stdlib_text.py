"""Text at hand on any machine, nothing downloaded: this Python's standard-library sources."""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path


def stdlib_sources() -> Iterator[str]:
    """Each non-empty UTF-8 .py file of the standard library (no site-packages), in path order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            yield text
