"""The observation slots kept incrementally are exactly the slots computed from the raw rows at once."""

from __future__ import annotations

from datetime import timedelta

from fleetscope import slot_runs
from tests.fleetdata import T0
from tests.publishdata import week_fleet


def test_refreshing_hour_by_hour_gives_the_same_runs_as_reading_the_raw_rows(conn):
    week_fleet(conn)
    since, at = T0 - timedelta(days=7), T0 - timedelta(minutes=7, seconds=30)
    raw = slot_runs.runs(conn, since=since, at=at)  # no watermark yet: every row read raw
    assert len(raw) > 100
    slot_runs.refresh(conn, up_to=T0 - timedelta(hours=5))
    for minutes in (240, 180, 179, 60, 45):  # steps that cut runs and slots in two
        slot_runs.refresh(conn, up_to=T0 - timedelta(minutes=minutes, seconds=7))
        assert slot_runs.runs(conn, since=since, at=at) == raw
    slot_runs.refresh(conn, up_to=T0 + timedelta(hours=1))  # past the window: clipped away again
    assert slot_runs.runs(conn, since=since, at=at) == raw
    stored = conn.execute("SELECT node_id, first_slot, last_slot FROM node_slot_runs ORDER BY 1, 2").fetchall()
    assert all(a[0] != b[0] or a[2] + 1 < b[1] for a, b in zip(stored, stored[1:]))  # touching runs were joined
