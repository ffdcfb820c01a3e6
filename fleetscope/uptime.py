"""Uptime over a window on the slot grid (DESIGN.md, Definitions).

A node's slots are the intervals [k*I, (k+1)*I) of its interval I, aligned to
the epoch. Over a window [start, end), the counted slots are those that lie
wholly inside it, from the slot of the node's first report on (its first
successful observation; issue 16: the time between registering a node and
starting its exporter is setup, not downtime, and a node that has never
reported has no uptime to judge yet). Slots in which
fleetscope itself was not observing (no collector heartbeat period overlaps
them) are left out for every node. Uptime is the fraction of the remaining
slots that hold at least one successful observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

# 2: slots count from the node's first report, not from its registration (issue 16).
UPTIME_VERSION = 2


@dataclass(frozen=True)
class Uptime:
    """Uptime of one node over one window, with its inputs."""

    window_slots: int    # slots in the window from the node's first report
    observed_slots: int  # of those, slots in which fleetscope was observing
    ok_slots: int        # of those, slots with a successful observation

    @property
    def excluded_slots(self) -> int:
        """Slots left out because fleetscope itself was not observing."""
        return self.window_slots - self.observed_slots

    @property
    def ratio(self) -> float | None:
        """ok / observed, or None when no slot could be judged."""
        return self.ok_slots / self.observed_slots if self.observed_slots else None


def slot_of(t: datetime, interval_s: int) -> int:
    """The index k of the slot [k*I, (k+1)*I) holding ``t``."""
    return math.floor(t.timestamp() / interval_s)


def slot_range(*, start: datetime, end: datetime, interval_s: int,
               first_report_at: datetime | None) -> tuple[int, int]:
    """First and last slot index counted in [start, end); empty when first > last.

    The slot holding ``first_report_at`` is the first that can count; with no
    report yet, none does.
    """
    last = math.floor(end.timestamp() / interval_s) - 1
    if first_report_at is None:
        return last + 1, last
    first = max(math.ceil(start.timestamp() / interval_s), math.floor(first_report_at.timestamp() / interval_s))
    return first, last


# A node's first report: its earliest successful observation, ever (an index
# range on observations' unique (node_id, time) read from the start, past the
# failed attempts before it). Observations are kept 365 days (0003), far
# longer than any uptime window, so the rows retention drops never move it
# into a window. {node_id} is the SQL naming the node.
FIRST_REPORT_SQL = "(SELECT min(fr.time) FROM observations fr WHERE fr.node_id = {node_id} AND fr.ok)"

# k0 is NULL (no slot counts) when the node has not reported yet: greatest()
# skips NULLs, so the first report is tested on its own.
UPTIME_SQL = """
WITH n AS (
    SELECT n.interval_s, {first_report} AS first_report FROM nodes n WHERE n.node_id = %(node_id)s
), b AS (
    SELECT n.interval_s AS i,
           CASE WHEN n.first_report IS NOT NULL THEN
                greatest(ceil(extract(epoch FROM %(start)s::timestamptz) / n.interval_s),
                         floor(extract(epoch FROM n.first_report) / n.interval_s))::bigint END AS k0,
           (floor(extract(epoch FROM %(end)s::timestamptz) / n.interval_s) - 1)::bigint AS k1
      FROM n
), observed AS (
    SELECT DISTINCT k
      FROM b, observing_periods p,
           generate_series(greatest(floor(extract(epoch FROM p.started_at) / b.i)::bigint, b.k0),
                           least(floor(extract(epoch FROM p.last_beat_at) / b.i)::bigint, b.k1)) AS k
     WHERE p.last_beat_at >= to_timestamp(b.k0 * b.i) AND p.started_at < to_timestamp((b.k1 + 1) * b.i)
), ok AS (
    SELECT DISTINCT floor(extract(epoch FROM o.time) / b.i)::bigint AS k
      FROM b, observations o
     WHERE o.node_id = %(node_id)s AND o.ok
       AND o.time >= to_timestamp(b.k0 * b.i) AND o.time < to_timestamp((b.k1 + 1) * b.i)
)
SELECT coalesce(greatest(b.k1 - b.k0 + 1, 0), 0),
       (SELECT count(*) FROM observed),
       (SELECT count(*) FROM ok JOIN observed USING (k))
  FROM b
""".format(first_report=FIRST_REPORT_SQL.format(node_id="n.node_id"))


def uptime(conn: psycopg.Connection, node_id: int, *, start: datetime, end: datetime) -> Uptime | None:
    """Uptime of ``node_id`` over [start, end), or None if the node does not exist."""
    row = conn.execute(UPTIME_SQL, {"node_id": node_id, "start": start, "end": end}).fetchone()
    if row is None:
        return None
    return Uptime(window_slots=row[0], observed_slots=row[1], ok_slots=row[2])
