"""Checked numbers: the one parser behind every numeric setting and parameter.

Environment settings (fleetscope/config.py), the dashboard's URL parameters
(dashboard/tables.py, dashboard/api.py) and the collector's JSON fields
(collector/requests.py) all turn something a person or a client wrote into a
number within bounds. What counts as a number is written here once; each
caller gets a ``Problem`` back as data (never an exception of ours) and words
it in its own terms: a message that stops the program and names the setting,
or a 400 with a reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

NOT_A_NUMBER = "not_a_number"
OUT_OF_RANGE = "out_of_range"
# Text integers: ASCII digits with an optional sign ('²'.isdigit() and int('1_000')
# are both true of Python, neither is a number a person means). Longer than
# this, a number is refused before it is parsed (int() of thousands of digits
# is slow, and no setting or parameter needs it).
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,100}")


@dataclass(frozen=True)
class Problem:
    """Why a value was refused.

    ``kind`` is NOT_A_NUMBER (``value`` is what was given) or OUT_OF_RANGE
    (``value`` is the number it parsed to, outside [lo, hi]).
    """

    kind: str
    value: Any
    lo: int | float
    hi: int | float

    @property
    def not_a_number(self) -> bool:
        return self.kind == NOT_A_NUMBER


def parse_int(text: str, *, lo: int, hi: int) -> int | Problem:
    """``text`` (surrounding whitespace ignored) as an integer in [lo, hi], or the Problem."""
    stripped = text.strip()
    if not _INT_TEXT.fullmatch(stripped):
        return Problem(NOT_A_NUMBER, text, lo, hi)
    return _within(int(stripped), lo, hi)


def parse_float(text: str, *, lo: float, hi: float) -> float | Problem:
    """``text`` as a number (Python's float syntax) in [lo, hi], or the Problem; NaN is never within."""
    try:
        value = float(text)
    except ValueError:
        return Problem(NOT_A_NUMBER, text, lo, hi)
    return _within(value, lo, hi)


def json_int(value: Any, *, lo: int, hi: int) -> int | Problem:
    """A decoded JSON value as an integer in [lo, hi], or the Problem.

    15 and 15.0 are integers; true/false, 1.5, "15" and non-finite numbers are not.
    """
    if isinstance(value, Decimal | float) and _integral(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return Problem(NOT_A_NUMBER, value, lo, hi)
    return _within(value, lo, hi)


def _integral(value: Decimal | float) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite() and value == value.to_integral_value()
    return math.isfinite(value) and value.is_integer()


def _within(value: int | float, lo: int | float, hi: int | float) -> Any:
    return value if lo <= value <= hi else Problem(OUT_OF_RANGE, value, lo, hi)
