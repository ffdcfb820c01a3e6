"""An offline node's "last seen" is its last success, however many failures came after; never seen is "new"."""

from __future__ import annotations

from datetime import timedelta

from fleetscope.explorer import NODE_COLUMNS, fleet_tables
from fleetscope.rollups import refresh
from tests.fleetdata import T0, Fleet, at

STATUS, LAST_OK = NODE_COLUMNS.index("status"), NODE_COLUMNS.index("last_ok")


def test_offline_nodes_show_their_last_success_and_never_seen_nodes_are_new(conn):
    fleet = Fleet(conn)
    fleet.observing(T0 - timedelta(days=3), T0 + timedelta(hours=1))
    dead = fleet.node(interval_s=60, registered_at=T0 - timedelta(days=3))
    recent = fleet.node(interval_s=60, registered_at=T0 - timedelta(days=3))
    never = fleet.node(interval_s=60, registered_at=T0 - timedelta(days=3))
    last_success = T0 - timedelta(days=2, minutes=17, seconds=3)
    fleet.observe(dead, last_success - timedelta(minutes=1))
    fleet.observe(dead, last_success)
    for minute in range(0, 2 * 24 * 60 - 20, 7):  # two days of failed scrapes after it
        fleet.observe(dead, T0 - timedelta(minutes=minute, seconds=30), ok=False)
        fleet.observe(never, T0 - timedelta(minutes=minute, seconds=30), ok=False)
    fleet.observe(recent, at(-300))  # this hour, beyond its 180 s grace
    fleet.observe(recent, at(-60), ok=False)
    if conn.execute("SELECT to_regclass('node_hourly_mat')").fetchone()[0]:
        refresh(conn, up_to=T0 - timedelta(hours=1))  # plain mode: most of it materialised
    nodes = {row[0]: row for row in fleet_tables(conn, at=T0).nodes}
    assert (nodes[dead][STATUS], nodes[dead][LAST_OK]) == ("down", last_success)
    assert (nodes[recent][STATUS], nodes[recent][LAST_OK]) == ("down", at(-300))
    assert (nodes[never][STATUS], nodes[never][LAST_OK]) == ("new", None)
