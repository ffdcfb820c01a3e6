"""Each node's successful-observation slots, run-length encoded and kept incrementally.

Uptime counts the slots (epoch-aligned intervals of the node's interval)
holding at least one successful observation (fleetscope/uptime.py). A
published bundle carries those slots for the week before its time as runs
``(node_id, first_slot, last_slot)``; computing them from raw observations
for a week of 10,000 nodes means reading 400 M rows. ``node_slot_runs``
keeps them instead: ``refresh`` reads only the raw observations since its
watermark and extends or appends runs, and ``runs`` reads the table (plus,
for a time past the watermark, the raw rows after it).

Slots are computed under each node's current interval, as the uptime SQL
does. Rows written below the watermark later (a collector replaying its spool
after a database outage) are not added: those slots count in the database's
uptime but not in the runs until a rebuild (``refresh`` after deleting the
watermark) — a known gap, narrow because the writer replays within minutes
and publications settle first.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The history a first refresh reads when there is no watermark: the longest
# window a published number needs (U7).
FIRST_HISTORY = timedelta(days=7)

# Runs among the successful observations in [%(lo)s, %(hi)s), per node (gaps
# and islands: a slot minus its rank is constant along a run). The slot is
# floor(epoch / interval): whole seconds first (date_part's double is exact to
# well under a microsecond at today's epochs, and flooring to the second
# before dividing by a whole number of seconds gives the same slot), then
# integer division, which costs a fraction of numeric arithmetic on 2 M rows.
NEW_RUNS_SQL = """
SELECT node_id, interval_s, min(k), max(k) FROM (
    SELECT node_id, interval_s, k, k - row_number() OVER (PARTITION BY node_id ORDER BY k) AS run FROM (
        SELECT o.node_id, n.interval_s, floor(date_part('epoch', o.time))::bigint / n.interval_s AS k
          FROM observations o JOIN nodes n USING (node_id)
         WHERE o.ok AND o.time >= %(lo)s AND o.time < %(hi)s
         GROUP BY 1, 2, 3) s) r
 GROUP BY node_id, interval_s, run
"""
LAST_RUNS_SQL = """
SELECT DISTINCT ON (node_id) node_id, interval_s, first_slot, last_slot FROM node_slot_runs
 WHERE node_id = ANY(%(nodes)s) ORDER BY node_id, first_slot DESC
"""


def _merge(last: dict[int, tuple[int, int, int]], new: list[tuple[int, int, int, int]]
           ) -> tuple[list[tuple[int, int]], list[tuple[int, int, int, int]]]:
    """New runs joined to each node's last stored run where they touch or overlap.

    ``last``: node -> (interval_s, first, last) of its latest stored run.
    Returns (stored runs to delete as (node, first), runs to write).
    """
    replace: list[tuple[int, int]] = []
    write: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    stored = dict.fromkeys(last, True)
    for node_id, interval_s, first, last_k in sorted(new):
        prev = last.get(node_id)
        if prev is not None and prev[0] == interval_s and first <= prev[2] + 1 and last_k >= prev[1] - 1:
            if stored.get(node_id):
                replace.append((node_id, prev[1]))
            else:
                write.pop((node_id, prev[1]), None)
            first, last_k = min(first, prev[1]), max(last_k, prev[2])
        write[(node_id, first)] = (node_id, interval_s, first, last_k)
        last[node_id] = (interval_s, first, last_k)
        stored[node_id] = False
    return replace, list(write.values())


def refresh(conn: psycopg.Connection, *, up_to: datetime) -> int:
    """Add the runs of observations from the watermark to ``up_to``; returns how many runs were written."""
    with conn.transaction():
        row = conn.execute("SELECT watermark FROM node_slot_runs_watermark FOR UPDATE").fetchone()
        lo = row[0] if row else up_to - FIRST_HISTORY
        if up_to <= lo:
            return 0
        conn.execute("SET LOCAL work_mem = '256MB'")
        new = conn.execute(NEW_RUNS_SQL, {"lo": lo, "hi": up_to}).fetchall()
        nodes = sorted({r[0] for r in new})
        last = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(LAST_RUNS_SQL, {"nodes": nodes})}
        replace, write = _merge(last, new)
        if replace:
            conn.execute("DELETE FROM node_slot_runs r USING unnest(%s::bigint[], %s::bigint[]) AS d(n, f)"
                         " WHERE r.node_id = d.n AND r.first_slot = d.f",
                         ([n for n, _ in replace], [f for _, f in replace]))
        with conn.cursor().copy("COPY node_slot_runs (node_id, interval_s, first_slot, last_slot) FROM STDIN") as copy:
            for run in write:
                copy.write_row(run)
        conn.execute("INSERT INTO node_slot_runs_watermark (watermark) VALUES (%s)"
                     " ON CONFLICT (only_row) DO UPDATE SET watermark = EXCLUDED.watermark", (up_to,))
    return len(write)


def runs(conn: psycopg.Connection, *, since: datetime, at: datetime) -> list[tuple[int, int, int]]:
    """(node_id, first_slot, last_slot) of every node registered by ``at``, for observations in [since, at).

    Reads ``node_slot_runs`` up to the watermark and raw observations past
    it; runs under an interval other than the node's current one are left
    out. Call ``refresh(up_to=at)`` first to read no raw rows at all.
    """
    row = conn.execute("SELECT watermark FROM node_slot_runs_watermark").fetchone()
    mark = min(row[0], at) if row else since
    stored = conn.execute(
        "SELECT r.node_id, r.interval_s, r.first_slot, r.last_slot FROM node_slot_runs r JOIN nodes n USING (node_id)"
        " WHERE r.interval_s = n.interval_s AND n.registered_at <= %(at)s"
        "   AND r.last_slot >= floor(date_part('epoch', %(since)s::timestamptz))::bigint / n.interval_s"
        "   AND r.first_slot <= floor(date_part('epoch', %(at)s::timestamptz))::bigint / n.interval_s",
        {"since": since, "at": at}).fetchall()
    last: dict[int, tuple[int, int, int]] = {}
    out: dict[int, dict[int, tuple[int, int, int]]] = {}  # node -> first -> (interval, first, last)
    for node_id, interval_s, first, last_k in sorted(stored):
        out.setdefault(node_id, {})[first] = (interval_s, first, last_k)
        last[node_id] = (interval_s, first, last_k)
    if mark < at:
        live = conn.execute(NEW_RUNS_SQL.replace("WHERE o.ok", "WHERE n.registered_at <= %(at)s AND o.ok"),
                            {"lo": max(mark, since), "hi": at, "at": at}).fetchall()
        replace, write = _merge(last, live)
        for node_id, first in replace:
            del out[node_id][first]
        for node_id, interval_s, first, last_k in write:
            out.setdefault(node_id, {})[first] = (interval_s, first, last_k)
    # Clipped to the slots wholly inside [since, at): the bundle carries no
    # partial slot at either end (uptime never counts one).
    result = []
    since_us, at_us = _us(since), _us(at)
    for node_id in sorted(out):
        for interval_s, first, last_k in sorted(out[node_id].values(), key=lambda r: r[1]):
            lo = -(-since_us // (interval_s * 1_000_000))
            hi = at_us // (interval_s * 1_000_000) - 1
            first, last_k = max(first, lo), min(last_k, hi)
            if first <= last_k:
                result.append((node_id, first, last_k))
    return result


def _us(t: datetime) -> int:
    """Microseconds since the epoch, exactly."""
    return (t - EPOCH) // timedelta(microseconds=1)
