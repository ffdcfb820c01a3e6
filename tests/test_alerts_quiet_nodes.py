"""No alert for a paused node, a node never seen, or a node already down when alerting starts.

The evaluator runs on a real database with simulated times; the outbox is
where every message would go, so an empty outbox means nothing was sent.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg

from collector.alerts import Evaluator
from fleetscope.registry import create_operator, register_node
from tests.alertharness import add_channel, observe, run_rounds
from tests.fleetdata import T0


async def test_paused_never_seen_and_already_down_nodes_send_nothing_while_a_live_node_does(any_mode_dsn):
    dsn = any_mode_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        add_channel(conn, operator_id, "webhook", "https://hooks.acme.example/fleet")

        def node(name: str) -> int:
            return register_node(conn, operator_id=operator_id, name=name, interval_s=5, grace_s=10,
                                 registered_at=T0 - timedelta(days=1)).node_id

        paused, never, long_dead, live = node("paused"), node("never-seen"), node("long-dead"), node("live")
        conn.execute("UPDATE nodes SET paused = true WHERE node_id = %s", (paused,))
        observe(conn, long_dead, T0 - timedelta(hours=5))
        for seconds in range(0, 30, 5):
            observe(conn, paused, T0 + timedelta(seconds=seconds))
            observe(conn, live, T0 + timedelta(seconds=seconds))

    sent = await run_rounds(Evaluator(flap_window=timedelta(hours=1)), dsn, T0, T0 + timedelta(minutes=2))
    assert sent == [(live, "node_down")]

    with psycopg.connect(dsn, autocommit=True) as conn:
        # The paused node's deadline is never set; the never-seen node has none either.
        deadlines = dict(conn.execute("SELECT node_id, alert_after FROM nodes").fetchall())
        assert deadlines[paused] is None and deadlines[never] is None
        states = dict(conn.execute("SELECT node_id, status FROM alert_state").fetchall())
        assert never not in states and states[long_dead] == "down"
        # The long-dead node returns: that is news, and it is told.
        observe(conn, long_dead, T0 + timedelta(minutes=3))
    sent = await run_rounds(Evaluator(flap_window=timedelta(hours=1)), dsn, T0 + timedelta(minutes=3), T0 + timedelta(minutes=3))
    assert sent == [(long_dead, "node_up")]
