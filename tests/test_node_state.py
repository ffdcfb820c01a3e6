"""Node state at t: online means a successful observation in (t - grace, t]."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleetscope.snapshot import fleet_snapshot
from fleetscope.states import NodeStatus, node_online, node_status
from tests.fleetdata import Fleet, at


def nodes_online(conn, t) -> int:
    return fleet_snapshot(conn, as_of=t).body["nodes"]["online"]


def test_it_keeps_a_node_online_until_exactly_the_grace_boundary(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=15, grace_s=45)
    fleet.observe(node, at(0))
    assert nodes_online(conn, at(0)) == 1
    assert nodes_online(conn, at(44.999)) == 1
    assert nodes_online(conn, at(45)) == 0, "a node last seen exactly grace ago is offline"
    assert nodes_online(conn, at(-0.001)) == 0, "an observation after t does not count at t"


def test_the_python_and_sql_definitions_agree_at_the_boundaries(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=15, grace_s=45)
    fleet.observe(node, at(0))
    for offset in (-1, 0, 14.999, 15, 44.999, 45, 46):
        t = at(offset)
        last_ok = at(0) if offset >= 0 else None
        assert node_online(last_ok=last_ok, grace_s=45, at=t) == bool(nodes_online(conn, t)), offset


def test_failed_observations_do_not_keep_a_node_online(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=15, grace_s=45)
    fleet.observe(node, at(0))
    for seconds in (15, 30, 45, 60):
        fleet.observe(node, at(seconds), ok=False)
    assert nodes_online(conn, at(60)) == 0
    fleet.observe(node, at(75))
    assert nodes_online(conn, at(75)) == 1


def test_a_node_registered_after_t_is_not_counted_at_t(conn):
    fleet = Fleet(conn)
    fleet.node(registered_at=at(100))
    assert fleet_snapshot(conn, as_of=at(99)).body["nodes"]["registered"] == 0
    snap = fleet_snapshot(conn, as_of=at(100)).body["nodes"]
    assert snap == {"registered": 1, "online": 0, "offline": 1}


@pytest.mark.parametrize(("offset", "expected"), [
    (None, NodeStatus.NEW), (5, NodeStatus.UP), (15, NodeStatus.LATE), (44, NodeStatus.LATE),
    (45, NodeStatus.DOWN), (600, NodeStatus.DOWN),
])
def test_node_status_is_new_up_late_or_down(offset, expected):
    last_ok = None if offset is None else at(0)
    now = at(offset or 0)
    assert node_status(last_ok=last_ok, interval_s=15, grace_s=45, at=now) is expected


def test_default_grace_is_three_intervals(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=20)
    assert conn.execute("SELECT grace_s FROM nodes WHERE node_id = %s", (node,)).fetchone()[0] == 60
    fleet.observe(node, at(0))
    assert nodes_online(conn, at(0) + timedelta(seconds=59)) == 1
    assert nodes_online(conn, at(0) + timedelta(seconds=60)) == 0
