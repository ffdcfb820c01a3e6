"""The database keeps the two facts the snapshot's per-node count relies on."""

from __future__ import annotations

import psycopg
import pytest

from tests.fleetdata import T0, Fleet


def test_a_uuid_claimed_by_a_second_node_is_marked_shared_on_both(conn):
    fleet = Fleet(conn)
    a, b = fleet.node(), fleet.node()
    fleet.gpus(a, ["GPU-1", "GPU-2"])
    assert conn.execute("SELECT count(*) FROM gpus WHERE shared").fetchone()[0] == 0
    fleet.gpus(b, ["GPU-2"])
    shared = conn.execute("SELECT node_id, gpu_uuid FROM gpus WHERE shared ORDER BY node_id").fetchall()
    assert shared == [(a, "GPU-2"), (b, "GPU-2")]


def test_a_gpu_set_may_name_only_gpus_registered_for_its_node(conn):
    fleet = Fleet(conn)
    a, b = fleet.node(), fleet.node()
    fleet.gpus(a, ["GPU-1"])
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="GPU-1 is in a GPU set of node"):
        fleet.gpu_set(b, T0, healthy=["GPU-1"])  # another node's GPU
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        fleet.gpu_set(a, T0 - (T0 - T0.replace(year=2020)), healthy=["GPU-1"])  # before it was registered


def test_a_gpu_set_may_not_name_a_gpu_twice_or_as_healthy_and_lost(conn):
    fleet = Fleet(conn)
    a = fleet.node()
    fleet.gpus(a, ["GPU-1", "GPU-2"])
    with pytest.raises(psycopg.errors.CheckViolation, match="names a GPU twice"):
        fleet.gpu_set(a, T0, healthy=["GPU-1", "GPU-1"])
    with pytest.raises(psycopg.errors.CheckViolation):
        fleet.gpu_set(a, T0, healthy=["GPU-1"], lost=["GPU-1"])
