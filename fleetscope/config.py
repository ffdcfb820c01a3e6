"""Settings from flags and environment, parsed and checked once at start-up.

A bad value stops the program with a message that names the setting (STYLE.md
rule 4, after healthchecks' ``envbool``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from fleetscope import numbers
from fleetscope.errors import FleetscopeError

# The embedded server listens on loopback only. 54329 is outside the usual
# 5432-5440 range so it does not collide with a system PostgreSQL.
DEFAULT_EMBEDDED_PORT = 54329
# Bounds of the implied price check (USD per GPU-hour). The cheapest public
# consumer-GPU rentals are around 0.05 USD/h and the dearest H100/H200 list
# prices below 15 USD/h; outside [0.01, 100] the ledger is almost surely wrong.
DEFAULT_PRICE_MIN = 0.01
DEFAULT_PRICE_MAX = 100.0


def env_int(name: str, default: int, *, lo: int, hi: int) -> int:
    """Return the integer in environment variable ``name``, or ``default``."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return _setting(name, raw, numbers.parse_int(raw, lo=lo, hi=hi), "an integer")


def env_float(name: str, default: float, *, lo: float, hi: float) -> float:
    """Return the number in environment variable ``name``, or ``default``."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return _setting(name, raw, numbers.parse_float(raw, lo=lo, hi=hi), "a number")


def _setting(name: str, raw: str, value, noun: str):
    if isinstance(value, numbers.Problem):
        if value.not_a_number:
            raise FleetscopeError(f"{name}={raw!r} is not {noun}")
        raise FleetscopeError(f"{name}={value.value} is out of range [{value.lo}, {value.hi}]")
    return value


def default_data_dir() -> Path:
    """Where the embedded server keeps its data when FLEETSCOPE_DATA_DIR is unset.

    A per-user directory. As root, PostgreSQL cannot run as the invoking user
    (it refuses uid 0), so root's data lives in a system location that the
    dedicated service user can reach; see fleetscope/embedded.py.
    """
    raw = os.environ.get("FLEETSCOPE_DATA_DIR")
    if raw:
        return Path(raw).expanduser().absolute()
    if os.name == "posix" and os.geteuid() == 0:
        return Path("/var/lib/fleetscope")
    return platformdirs.user_data_path("fleetscope")


@dataclass(frozen=True)
class PriceBounds:
    """The configured bounds of the implied price per GPU-hour, in USD."""

    low: float
    high: float

    @classmethod
    def from_env(cls) -> PriceBounds:
        low = env_float("FLEETSCOPE_PRICE_MIN", DEFAULT_PRICE_MIN, lo=0.0, hi=1e6)
        high = env_float("FLEETSCOPE_PRICE_MAX", DEFAULT_PRICE_MAX, lo=0.0, hi=1e6)
        if low > high:
            raise FleetscopeError(f"FLEETSCOPE_PRICE_MIN={low} is above FLEETSCOPE_PRICE_MAX={high}")
        return cls(low, high)
