"""The hourly rollup: materialised buckets agree with the raw rows, late rows included."""

from __future__ import annotations

from datetime import timedelta

from fleetscope import rollups
from fleetscope.migrate import database_mode
from tests.fleetdata import T0, Fleet

H = timedelta(hours=1)
RAW = """
SELECT node_id, time_bucket('1 hour', time) AS bucket, count(DISTINCT slot) FILTER (WHERE ok), count(*),
       count(*) FILTER (WHERE NOT ok)
  FROM observations WHERE time >= %(ws)s AND time < %(we)s GROUP BY 1, 2 ORDER BY 1, 2
"""


def rollup(conn, ws, we):
    sql = rollups.node_hourly_sql(database_mode(conn))
    return sorted(conn.execute(f"SELECT * FROM ({sql}) h", {"ws": ws, "we": we}).fetchall())


def raw(conn, ws, we):
    return sorted(conn.execute(RAW, {"ws": ws, "we": we}).fetchall())


def build(conn):
    fleet = Fleet(conn)
    a, b = fleet.node(), fleet.node(interval_s=60)
    for i in range(0, 3 * 3600, 15):
        fleet.observe(a, T0 - 3 * H + timedelta(seconds=i), ok=(i // 15) % 7 != 0)
    for i in range(0, 3 * 3600, 20):  # three observations per 60 s slot: counts once
        fleet.observe(b, T0 - 3 * H + timedelta(seconds=i))
    return fleet, a, b


def test_the_rollup_equals_the_raw_aggregate_before_and_after_a_refresh(conn):
    build(conn)
    ws, we = T0 - 3 * H, T0
    expected = raw(conn, ws, we)
    assert [r[2] for r in expected if r[0] == expected[-1][0]] == [60, 60, 60]
    assert rollup(conn, ws, we) == expected
    rollups.refresh(conn, up_to=T0 - H + timedelta(minutes=30))
    assert rollup(conn, ws, we) == expected


def test_a_late_row_below_the_watermark_is_picked_up_by_the_next_refresh(conn):
    fleet, a, _ = build(conn)
    rollups.refresh(conn, up_to=T0)
    late = T0 - 3 * H + timedelta(seconds=7)  # slot 0 of node a failed; now a late success in it
    fleet.observe(a, late)
    rollups.invalidate(conn, late, mode=database_mode(conn))
    rollups.refresh(conn, up_to=T0)
    assert rollup(conn, T0 - 3 * H, T0) == raw(conn, T0 - 3 * H, T0)
