"""A GPU is verified for 24 h after a passed proof, at any as-of time, the same in every surface; a failed one flags it."""

from __future__ import annotations

from datetime import timedelta

from fleetscope.explorer import fleet_tables
from fleetscope.reputation import node_reputation
from fleetscope.snapshot import fleet_snapshot
from tests.fleetdata import T0, Fleet

H = timedelta(hours=1)


def verification_everywhere(conn, node, at):
    snap = fleet_snapshot(conn, as_of=at).body["gpus"]
    tables = fleet_tables(conn, at=at)
    per_gpu = sorted(row[8] for row in tables.gpus if row[1] == node)
    rep = node_reputation(conn, node, at=at)
    return ((snap["verified"], snap["unverified"], snap["flagged"]), per_gpu,
            (rep.gpus_verified, rep.gpus_unverified, rep.gpus_flagged))


def test_a_pass_verifies_its_gpu_for_24_hours_even_when_a_later_pass_exists(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.observing(T0 - timedelta(days=3), T0 + timedelta(days=2))
    fleet.gpus(node, ["GPU-1"], since=T0 - timedelta(days=3))
    fleet.proof(node, "GPU-1", "passed", decided_at=T0 - 30 * H)
    fleet.proof(node, "GPU-1", "passed", decided_at=T0 + 2 * H)  # the latest pass is after some as-of times below
    verified = ((1, 0, 0), ["verified"], (1, 0, 0))
    unverified = ((0, 1, 0), ["unverified"], (0, 1, 0))
    assert verification_everywhere(conn, node, T0 - 31 * H) == unverified   # before any pass
    assert verification_everywhere(conn, node, T0 - 10 * H) == verified     # 20 h after the first
    assert verification_everywhere(conn, node, T0) == unverified           # 30 h after it, before the second
    assert verification_everywhere(conn, node, T0 + 2 * H) == verified      # at the second
    assert verification_everywhere(conn, node, T0 + 26 * H - timedelta(seconds=1)) == verified
    assert verification_everywhere(conn, node, T0 + 26 * H) == unverified  # (at - 24 h, at]: exactly 24 h is out


def test_a_no_answer_neither_verifies_nor_flags_and_a_failure_flags_until_the_next_pass(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.observing(T0 - timedelta(days=3), T0 + timedelta(days=2))
    fleet.gpus(node, ["GPU-1"], since=T0 - timedelta(days=3))
    fleet.proof(node, "GPU-1", "no_answer", decided_at=T0 - 5 * H)
    assert verification_everywhere(conn, node, T0 - 4 * H) == ((0, 1, 0), ["unverified"], (0, 1, 0))
    fleet.proof(node, "GPU-1", "passed", decided_at=T0 - 3 * H)
    fleet.proof(node, "GPU-1", "failed", decided_at=T0 - 2 * H, reason="wrong result")
    fleet.finding("proof_failed", node_id=node, gpu_uuid="GPU-1", first_seen=T0 - 2 * H, resolved_at=T0 + H)
    fleet.proof(node, "GPU-1", "passed", decided_at=T0 + H)
    assert verification_everywhere(conn, node, T0 - 2.5 * H) == ((1, 0, 0), ["verified"], (1, 0, 0))
    assert verification_everywhere(conn, node, T0) == ((0, 0, 1), ["flagged"], (0, 0, 1))
    assert verification_everywhere(conn, node, T0 + H) == ((1, 0, 0), ["verified"], (1, 0, 0))
    assert conn.execute("SELECT last_passed_at FROM gpus WHERE node_id = %s", (node,)).fetchone()[0] == T0 + H
