"""The hourly per-node rollup, ``node_hourly``: ok slots and observations per hour.

TimescaleDB mode keeps it as a continuous aggregate with real-time aggregation
and refreshes it by policy. Plain-PostgreSQL mode keeps closed buckets in
``node_hourly_mat`` below a watermark, refreshed by ``refresh`` from the
collector's maintenance loop; anything at or above the watermark is
aggregated from raw rows at query time, so readers always see current data in
both modes.

Rows can arrive late (the writer replays its spool after a database outage).
The writer calls ``invalidate`` with the oldest time it wrote below the
watermark, and the next ``refresh`` recomputes from there, as TimescaleDB's
invalidation log does for continuous aggregates.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

BUCKET = timedelta(hours=1)
# Hours are materialised only this long after they end (the watermark the
# maintenance loop refreshes up to): rows arrive at receive time, so only a
# spool replay writes below the watermark, and that marks the rollup for
# recomputation (invalidate). The writer invalidates only for rows older than this.
ROLLUP_SETTLE = timedelta(minutes=5)

# The hourly aggregate of observations in [{lo}, {hi}): what refresh
# materialises and what reads add live above the watermark. (The migrations
# define the same aggregate as the plain-mode view and the continuous
# aggregate, for readers such as Grafana.)
_AGGREGATE = """
SELECT node_id, time_bucket('1 hour', time) AS bucket,
       (count(DISTINCT slot) FILTER (WHERE ok))::integer AS ok_slots,
       count(*)::integer AS observations,
       (count(*) FILTER (WHERE NOT ok))::integer AS failed
  FROM observations
 WHERE time >= {lo} AND time < {hi}
 GROUP BY node_id, time_bucket('1 hour', time)
"""
_WATERMARK = "(SELECT coalesce(watermark, '-infinity') FROM rollup_watermarks WHERE name = 'node_hourly')"


def floor_bucket(t: datetime) -> datetime:
    """The start of the hourly bucket holding ``t`` (UTC hours, as time_bucket)."""
    t = t.astimezone(timezone.utc)
    return t.replace(minute=0, second=0, microsecond=0)


def node_hourly_sql(mode: str) -> str:
    """A subquery of (node_id, bucket, ok_slots, observations, failed) for buckets in [%(ws)s, %(we)s).

    Both bounds must be bucket-aligned. In plain mode the materialised part and
    the live part are bounded explicitly so the live part scans only raw rows
    from the watermark on, through the time index.
    """
    if mode == "timescaledb":
        return ("SELECT node_id, bucket, ok_slots, observations, failed FROM node_hourly"
                " WHERE bucket >= %(ws)s AND bucket < %(we)s")
    return (
        "SELECT node_id, bucket, ok_slots, observations, failed FROM node_hourly_mat"
        f" WHERE bucket >= %(ws)s AND bucket < %(we)s AND bucket < {_WATERMARK}"
        " UNION ALL "
        + _AGGREGATE.format(lo=f"greatest(%(ws)s, {_WATERMARK})", hi="%(we)s")
    )


# Marks the rollup for recomputation from %(s)s when that is below its watermark.
INVALIDATE_SQL = """
UPDATE rollup_watermarks SET invalidated_from = least(coalesce(invalidated_from, %(s)s), %(s)s)
 WHERE name = 'node_hourly' AND watermark > %(s)s
"""


def invalidate(conn: psycopg.Connection, since: datetime, *, mode: str) -> None:
    """Record that observations at or after ``since`` were written late (call it in the writing transaction).

    The watermark row is share-locked first, so a ``refresh`` cannot move the
    watermark past these rows between this check and the commit (it waits, and
    then sees them). A no-op in TimescaleDB mode, which keeps its own
    invalidation log.
    """
    if mode != "timescaledb":
        conn.execute("SELECT 1 FROM rollup_watermarks WHERE name = 'node_hourly' FOR SHARE")
        conn.execute(INVALIDATE_SQL, {"s": since})


def refresh(conn: psycopg.Connection, *, up_to: datetime) -> tuple[datetime, int]:
    """Materialise closed buckets before ``up_to``; return (watermark, rows written).

    Plain mode recomputes from the older of the current watermark and the
    invalidation mark, in one transaction, so readers never see a
    half-refreshed rollup. TimescaleDB mode asks the continuous aggregate to
    refresh (its policy does the same on a schedule); ``conn`` must then be in
    autocommit mode, and the row count is not reported (-1).
    """
    from fleetscope.migrate import database_mode

    new_mark = floor_bucket(up_to)
    if database_mode(conn) == "timescaledb":
        conn.execute("CALL refresh_continuous_aggregate('node_hourly', NULL, %s)", (new_mark,))
        return new_mark, -1
    with conn.transaction():
        row = conn.execute(
            "SELECT watermark, invalidated_from FROM rollup_watermarks WHERE name = 'node_hourly' FOR UPDATE"
        ).fetchone()
        mark, invalid = row
        if mark is None:
            first = conn.execute("SELECT min(time) FROM observations").fetchone()[0]
            lo = floor_bucket(first) if first is not None else new_mark
        else:
            lo = mark if invalid is None else min(mark, floor_bucket(invalid))
        if lo >= new_mark:
            return (mark or new_mark), 0
        conn.execute("DELETE FROM node_hourly_mat WHERE bucket >= %s AND bucket < %s", (lo, new_mark))
        cur = conn.execute(
            "INSERT INTO node_hourly_mat (node_id, bucket, ok_slots, observations, failed) "
            + _AGGREGATE.format(lo="%(lo)s", hi="%(hi)s"),
            {"lo": lo, "hi": new_mark})
        conn.execute("UPDATE rollup_watermarks SET watermark = %s, invalidated_from = NULL"
                     " WHERE name = 'node_hourly'", (new_mark,))
        return new_mark, cur.rowcount
