"""Times as fleetscope writes and reads them: UTC, ISO 8601 with a Z.

One home for the format every surface shows (the snapshot, the JSON API,
bundles, findings' evidence, the pages), so that a time written by one part
is read back by any other unchanged.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(timezone.utc)


def format_time(t: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second when it is whole."""
    t = t.astimezone(timezone.utc)
    text = t.isoformat(timespec="microseconds" if t.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def format_optional(t: datetime | None) -> str | None:
    """``format_time``, with None for no time."""
    return None if t is None else format_time(t)


def parse_time(text: str) -> datetime:
    """A time as ``format_time`` writes it (or any ISO 8601 with an offset), in UTC.

    A time without an offset is taken as UTC. Raises ValueError on anything
    that is not ISO 8601.
    """
    t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
