"""Progress bar (documents, tokens/s) and the one-line summary at the end of a run."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["ConversionProgress", "human_count", "human_bytes"]


def human_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


class ConversionProgress:
    """A tqdm bar over input bytes (when the total is known) or documents, with documents and
    tokens/s alongside. Disabled bars cost nothing."""

    def __init__(
        self,
        *,
        total_bytes: int | None,
        enabled: bool,
        desc: str,
        done: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        """``done``: documents, tokens and input bytes an interrupted run already converted (the
        counts go on from there; rates count this run's work only)."""
        self.start = time.perf_counter()
        self.documents, self.tokens, self.bytes = done
        self.resumed_tokens = self.tokens
        self.resumed_bytes = self.bytes
        self._last_postfix = 0.0
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            if total_bytes:
                self._bar = tqdm(
                    total=total_bytes,
                    unit="B",
                    unit_scale=True,
                    desc=desc,
                    file=sys.stderr,
                    dynamic_ncols=True,
                    initial=self.bytes,
                )
            else:
                self._bar = tqdm(
                    unit=" docs",
                    desc=desc,
                    file=sys.stderr,
                    dynamic_ncols=True,
                    initial=self.documents,
                )
        self._by_bytes = bool(total_bytes)

    def update(self, *, documents: int, tokens: int, num_bytes: int) -> None:
        self.documents += documents
        self.tokens += tokens
        self.bytes += num_bytes
        if self._bar is None:
            return
        self._bar.update(num_bytes if self._by_bytes else documents)
        now = time.perf_counter()
        if now - self._last_postfix > 0.5:
            self._last_postfix = now
            self._show_counts(now)

    def _show_counts(self, now: float) -> None:
        rate = (self.tokens - self.resumed_tokens) / max(now - self.start, 1e-9)
        self._bar.set_postfix_str(
            f"docs={human_count(self.documents)} tokens/s={human_count(rate)}", refresh=False
        )

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def close(self) -> None:
        if self._bar is not None:
            self._show_counts(time.perf_counter())
            self._bar.close()
            self._bar = None
