"""A cloned GPU UUID: the claim seen first keeps its standing, the cloners are flagged (issue 16)."""

from __future__ import annotations

from datetime import timedelta

from fleetscope.explorer import GPU_COLUMNS, fleet_tables
from fleetscope.integrity import run_checks
from fleetscope.reputation import node_reputation
from fleetscope.snapshot import fleet_snapshot
from tests.fleetdata import T0, Fleet, at


def _owner_and_cloner(conn):
    fleet = Fleet(conn)
    fleet.observing(T0 - timedelta(days=8), T0)
    owner, cloner, bystander = fleet.node(name="owner"), fleet.node(name="cloner"), fleet.node(name="bystander")
    fleet.gpus(owner, ["GPU-real", "GPU-owner-2"], since=T0 - timedelta(days=3), checked=True)
    # The cloner shows up a day later with the owner's UUID beside one of its own.
    fleet.gpus(cloner, ["GPU-real", "GPU-cloner-own"], since=T0 - timedelta(days=2), checked=True)
    fleet.gpus(bystander, ["GPU-b"], since=T0 - timedelta(days=3), checked=True)
    for node in (owner, cloner, bystander):
        for seconds in range(-3600, 0, 15):
            fleet.observe(node, at(seconds + 1))
    conn.execute("UPDATE gpus SET last_seen = %s", (T0,))
    return owner, cloner, bystander


def test_the_first_claimant_keeps_its_reputation_and_verified_gpus_while_the_cloner_is_flagged(conn):
    owner, cloner, bystander = _owner_and_cloner(conn)
    before = {n: node_reputation(conn, n, at=T0) for n in (owner, cloner, bystander)}
    assert before[owner].v == 1.0 and before[cloner].v == 1.0  # both proved before the check ran

    done = run_checks(conn, at=T0)
    assert done["duplicate_uuid"].opened == 1
    (node_id, uuid, subject, evidence), = conn.execute(
        "SELECT node_id, gpu_uuid, subject, evidence FROM integrity_findings WHERE kind = 'duplicate_uuid'"
        " AND resolved_at IS NULL").fetchall()
    assert (node_id, uuid, subject) == (cloner, None, "GPU-real")
    assert evidence["first_claimed_by"] == owner and evidence["nodes"] == sorted([owner, cloner])

    after = {n: node_reputation(conn, n, at=T0) for n in (owner, cloner, bystander)}
    assert after[owner].score == before[owner].score and after[owner].gpus_flagged == 0
    assert (after[owner].gpus_verified, after[owner].v) == (2, 1.0)
    assert after[cloner].score == 0 and after[cloner].gpus_flagged == 2 and after[cloner].v == 0
    assert after[bystander].score == before[bystander].score

    # The explorer's per-GPU rows say the same: the owner's claim verified, the cloner's flagged.
    rows = [dict(zip(GPU_COLUMNS, g)) for g in fleet_tables(conn, at=T0).gpus]
    verification = {(g["node_id"], g["gpu_uuid"]): g["verification"] for g in rows}
    assert verification[(owner, "GPU-real")] == "verified"
    assert verification[(cloner, "GPU-real")] == "flagged"

    # The fleet counts the UUID once; it is flagged (one of its claims is), the owner's other GPU is not.
    gpus_count = fleet_snapshot(conn, as_of=T0).body["gpus"]
    assert gpus_count["registered"] == 4
    assert (gpus_count["verified"], gpus_count["flagged"]) == (2, 2)


def test_the_same_first_claimant_stays_the_owner_when_the_check_runs_again(conn):
    owner, cloner, _ = _owner_and_cloner(conn)
    run_checks(conn, at=T0)
    again = run_checks(conn, at=T0 + timedelta(minutes=1))
    assert (again["duplicate_uuid"].opened, again["duplicate_uuid"].refreshed) == (0, 1)
    assert conn.execute("SELECT array_agg(node_id) FROM integrity_findings WHERE resolved_at IS NULL").fetchone()[0] \
        == [cloner]
