"""Simulated history: which spans of the database a simulator wrote rather than fleetscope observed.

``fleetscope demo`` gives its simulated fleet a week of past before its
services start (collector/sim_history.py); the rows it writes are recorded
here as a span (migration 0008), and every page or chart whose time range
overlaps a span says so (issue 16: "clearly labelled as simulated history").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleetscope.snapshot import format_time

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Span:
    """One span of simulated history: [started_at, ended_at), and how its rows are marked."""

    collector_id: str
    started_at: datetime
    ended_at: datetime
    job_prefix: str
    nodes: int
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {"collector_id": self.collector_id, "started_at": format_time(self.started_at),
                "ended_at": format_time(self.ended_at), "job_prefix": self.job_prefix, "nodes": self.nodes,
                "note": self.note}


def record(conn: psycopg.Connection, span: Span) -> None:
    """Record ``span`` (in the caller's transaction: with the rows it labels)."""
    conn.execute("INSERT INTO simulated_history (collector_id, started_at, ended_at, job_prefix, nodes, note)"
                 " VALUES (%s, %s, %s, %s, %s, %s)",
                 (span.collector_id, span.started_at, span.ended_at, span.job_prefix, span.nodes, span.note))


def spans(conn: psycopg.Connection, *, start: datetime | None = None, end: datetime | None = None) -> list[Span]:
    """The spans of simulated history overlapping [start, end) (all of them without bounds), oldest first."""
    rows = conn.execute(
        "SELECT collector_id, started_at, ended_at, job_prefix, nodes, note FROM simulated_history"
        " WHERE (%(end)s::timestamptz IS NULL OR started_at < %(end)s)"
        "   AND (%(start)s::timestamptz IS NULL OR ended_at > %(start)s)"
        " ORDER BY started_at", {"start": start, "end": end}).fetchall()
    return [Span(*row) for row in rows]
