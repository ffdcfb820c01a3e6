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


def test_two_first_claims_of_one_uuid_committed_at_the_same_time_are_both_marked(any_mode_dsn):
    import threading

    with psycopg.connect(any_mode_dsn, autocommit=True) as setup:
        fleet = Fleet(setup)
        a, b = fleet.node(), fleet.node()
    insert = ("INSERT INTO gpus (node_id, gpu_uuid, first_seen, last_seen) VALUES (%s, 'GPU-race', now(), now())")
    with psycopg.connect(any_mode_dsn) as first, psycopg.connect(any_mode_dsn) as second:
        first.execute(insert, (a,))  # not yet committed
        done = threading.Event()

        def claim_b() -> None:
            second.execute(insert, (b,))  # waits on the first's claim count
            second.commit()
            done.set()

        thread = threading.Thread(target=claim_b)
        thread.start()
        assert not done.wait(0.5), "the second claim waits for the first"
        first.commit()
        thread.join(10)
        assert done.is_set()
    with psycopg.connect(any_mode_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM gpus WHERE gpu_uuid = 'GPU-race' AND shared").fetchone()[0] == 2
