"""A finding resolves when its evidence goes, with the time and the reason."""

from __future__ import annotations

from datetime import timedelta

from fleetscope.integrity import run_checks
from tests.fleetdata import T0, Fleet


def test_a_duplicated_uuid_that_stops_being_duplicated_resolves(conn):
    fleet = Fleet(conn)
    a, b = fleet.node(), fleet.node()
    fleet.gpus(a, ["GPU-x"], since=T0 - timedelta(minutes=5))
    fleet.gpus(b, ["GPU-x"], since=T0 - timedelta(minutes=5))
    conn.execute("UPDATE gpus SET last_seen = %s", (T0,))
    run_checks(conn, at=T0)
    assert conn.execute("SELECT count(*) FROM integrity_findings WHERE resolved_at IS NULL").fetchone()[0] == 1
    # Node b stops reporting it; node a goes on.
    conn.execute("UPDATE gpus SET last_seen = %s WHERE node_id = %s", (T0 + timedelta(hours=1), a))
    later = T0 + timedelta(hours=1)
    done = run_checks(conn, at=later)
    assert done["duplicate_uuid"].resolved == 1
    rows = conn.execute("SELECT node_id, resolved_at, resolution FROM integrity_findings").fetchall()
    assert rows == [(b, later, "the UUID is no longer reported by more than one node")]


def test_a_virtualised_gpu_that_reports_bare_metal_again_resolves_and_a_new_one_opens_a_new_finding(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.gpus(node, ["GPU-v"], since=T0 - timedelta(minutes=5))
    conn.execute("UPDATE gpus SET virtualization_mode = 'vgpu'")
    run_checks(conn, at=T0)
    conn.execute("UPDATE gpus SET virtualization_mode = 'none'")
    run_checks(conn, at=T0 + timedelta(minutes=1))
    conn.execute("UPDATE gpus SET virtualization_mode = 'host_vgpu'")
    run_checks(conn, at=T0 + timedelta(minutes=2))
    rows = conn.execute("SELECT first_seen, resolved_at, evidence->>'virtualization_mode' FROM integrity_findings"
                        " ORDER BY finding_id").fetchall()
    assert rows == [(T0, T0 + timedelta(minutes=1), "vgpu"), (T0 + timedelta(minutes=2), None, "host_vgpu")]


def test_an_identity_change_is_a_node_finding_until_the_set_is_stable_for_a_day(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.gpus(node, ["GPU-1", "GPU-2"], since=T0 - timedelta(days=2))
    fleet.gpus(node, ["GPU-1", "GPU-3"], since=T0 - timedelta(hours=2))
    # A GPU going from healthy to lost is the same hardware: not a change.
    fleet.gpu_set(node, T0 - timedelta(hours=1), healthy=["GPU-1"], lost=["GPU-3"])
    run_checks(conn, at=T0)
    row = conn.execute("SELECT node_id, gpu_uuid, evidence FROM integrity_findings").fetchone()
    assert row[:2] == (node, None)
    assert (row[2]["added"], row[2]["removed"], row[2]["at"]) == (["GPU-3"], ["GPU-2"], "2026-11-24T10:00:00Z")
    run_checks(conn, at=T0 + timedelta(hours=23))
    assert conn.execute("SELECT resolved_at FROM integrity_findings").fetchone()[0] is not None
