"""Composer time strings in a training config ('100ba', '1ep', '2000tok', '512sp', '0.5dur').

Every time key is parsed here once, at validate time, with the units that key's consumer can act
on. The grammar is composer's (``composer.core.Time.from_timestring``: a number, scientific
notation included, then a unit; whole numbers except for ``dur``), written out so that
validating a config does not import composer (and torch); tests/test_validate_checks.py checks
that both parsers agree. The callbacks turn a parsed time into composer's ``Time``.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["INTERVAL_UNITS", "LENGTH_UNITS", "TimeSpec", "parse_time", "time_check"]

_NAMES = {
    "ba": "batches",
    "ep": "epochs",
    "tok": "tokens",
    "sp": "samples",
    "dur": "a fraction of max_duration",
}
# An "every N" interval goes through composer's interval scheduler, which takes all five units.
INTERVAL_UNITS = ("ba", "ep", "tok", "sp", "dur")
# A length of training (max_duration) cannot be a fraction of itself.
LENGTH_UNITS = ("ba", "ep", "tok", "sp")
# composer's units (iterations and seconds too); which ones a key accepts is checked after
_FORM = re.compile(r"^(.+?)(ba|ep|tok|sp|dur|iter|sec)$")


class TimeSpec(NamedTuple):
    """A parsed time: a whole number (a float for ``dur``) and composer's unit name."""

    value: int | float
    unit: str


def parse_time(text: str) -> TimeSpec:
    """``text`` parsed as composer parses it; ValueError naming the accepted form if it is not."""
    match = _FORM.match(text.strip())
    number = math.nan
    if match is not None:
        with contextlib.suppress(ValueError):
            number = float(match.group(1))
    if match is None or not math.isfinite(number):
        raise ValueError(
            f"'{text}' is not a composer time; write a number and a unit, e.g. '100ba'"
        )
    unit = match.group(2)
    if unit == "dur":
        return TimeSpec(number, unit)
    if number != int(number):
        raise ValueError(
            f"'{text}' is not a composer time ('{unit}' counts whole {_NAMES.get(unit, unit)})"
        )
    return TimeSpec(int(number), unit)


def time_check(units: tuple[str, ...], *, allow_zero: bool = False) -> Callable[[str], str]:
    """A pydantic validator: a time string in one of ``units``, above zero (or zero when
    ``allow_zero``), and at most 1 in ``dur``."""

    def check(value: str) -> str:
        t = parse_time(value)
        unit = t.unit
        if unit not in units:
            accepted = ", ".join(f"'{u}' ({_NAMES[u]})" for u in units)
            raise ValueError(f"'{value}': unit '{unit}' is not accepted here; use {accepted}")
        number = float(t.value)
        if number < 0 or (number == 0 and not allow_zero):
            bound = "0 or more" if allow_zero else "above 0"
            raise ValueError(f"'{value}' must be {bound}")
        if unit == "dur" and number > 1:
            raise ValueError(f"'{value}' is more than the whole run; a 'dur' time is at most 1")
        return value

    return check
