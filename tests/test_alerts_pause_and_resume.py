"""Pausing a node silences its alerts and nothing else; resuming re-arms them (issue 16).

The evaluator runs on a real database with simulated times; the pause is
``fleetscope.registry.set_paused``, the statement the collector's
``PATCH /api/v1/nodes/{id}`` runs. The outbox is where every message would go.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg

from collector.alerts import Evaluator
from fleetscope.registry import create_operator, register_node, set_paused
from fleetscope.snapshot import fleet_snapshot
from fleetscope.uptime import uptime
from tests.alertharness import add_channel, observe, run_rounds
from tests.fleetdata import T0


async def test_a_paused_node_goes_down_silently_counts_as_down_and_is_announced_once_resumed(dsn):
    evaluator = Evaluator(flap_window=timedelta(hours=1))
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        rival_id, _ = create_operator(conn, "rival")
        add_channel(conn, operator_id, "webhook", "https://hooks.acme.example/fleet")
        node = register_node(conn, operator_id=operator_id, name="rig", interval_s=5, grace_s=10,
                             registered_at=T0 - timedelta(days=1)).node_id
        conn.execute("INSERT INTO observing_periods (collector_id, started_at, last_beat_at) VALUES ('c', %s, %s)",
                     (T0 - timedelta(hours=1), T0 + timedelta(hours=1)))
        for seconds in range(0, 30, 5):
            observe(conn, node, T0 + timedelta(seconds=seconds))
    assert await run_rounds(evaluator, dsn, T0, T0 + timedelta(seconds=25)) == []  # up: first known state, not news

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert not set_paused(conn, operator_id=rival_id, node_id=node, paused=True)  # not theirs
        assert conn.execute("SELECT paused FROM nodes").fetchone() == (False,)
        assert set_paused(conn, operator_id=operator_id, node_id=node, paused=True)
        assert conn.execute("SELECT alert_after FROM nodes").fetchone() == (None,)
    # It stops reporting at T0 + 25 s and is down from T0 + 35 s: nothing is sent while it is paused.
    assert await run_rounds(evaluator, dsn, T0 + timedelta(seconds=30), T0 + timedelta(minutes=2)) == []

    with psycopg.connect(dsn, autocommit=True) as conn:
        # The public numbers ignore the pause: offline in the snapshot, its silent slots down in its uptime.
        assert fleet_snapshot(conn, as_of=T0 + timedelta(minutes=2)).body["nodes"]["offline"] == 1
        up = uptime(conn, node, start=T0, end=T0 + timedelta(minutes=2))
        assert (up.ok_slots, up.observed_slots) == (6, 24)
        assert set_paused(conn, operator_id=operator_id, node_id=node, paused=False)
    # Resumed while down: the deadline is set again from its last report, and the next round tells.
    sent = await run_rounds(evaluator, dsn, T0 + timedelta(minutes=2, seconds=5), T0 + timedelta(minutes=3))
    assert sent == [(node, "node_down")]
