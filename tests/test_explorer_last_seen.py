"""An offline node's "last seen" is its last success, however many failures came after; never seen is "new"."""

from __future__ import annotations

from fleetscope.explorer import NODE_COLUMNS, fleet_tables
from tests.fleetdata import T0, Fleet, last_seen_nodes

STATUS, LAST_OK = NODE_COLUMNS.index("status"), NODE_COLUMNS.index("last_ok")


def test_offline_nodes_show_their_last_success_and_never_seen_nodes_are_new(conn):
    seen = last_seen_nodes(Fleet(conn), at=T0)
    nodes = {row[0]: row for row in fleet_tables(conn, at=T0).nodes}
    assert (nodes[seen.dead][STATUS], nodes[seen.dead][LAST_OK]) == ("down", seen.last_ok[seen.dead])
    assert (nodes[seen.recent][STATUS], nodes[seen.recent][LAST_OK]) == ("down", seen.last_ok[seen.recent])
    assert (nodes[seen.never][STATUS], nodes[seen.never][LAST_OK]) == ("new", None)
