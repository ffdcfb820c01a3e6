"""A node with a virtualised GPU drops to V = 0 (flagged), and its reputation shows why."""

from __future__ import annotations

from datetime import timedelta

from fleetscope.integrity import run_checks
from fleetscope.reputation import node_reputation
from tests.fleetdata import T0, Fleet


def test_a_virtualised_gpu_drops_its_node_to_v_zero_and_the_reputation_shows_why(conn):
    fleet = Fleet(conn)
    honest, cheat = fleet.node(), fleet.node()
    # Both passed a proof of GPU an hour ago: a virtualised GPU that does the work is still flagged.
    fleet.gpus(honest, ["GPU-h1", "GPU-h2"], since=T0 - timedelta(days=8), checked=True)
    fleet.gpus(cheat, ["GPU-c1", "GPU-c2"], since=T0 - timedelta(days=8), checked=True)
    conn.execute("UPDATE gpus SET virtualization_mode = 'vgpu' WHERE gpu_uuid = 'GPU-c2'")
    fleet.observing(T0 - timedelta(days=8), T0)
    for node in (honest, cheat):
        for k in range(4):
            fleet.observe(node, T0 - timedelta(minutes=k + 1))
    run_checks(conn, at=T0 - timedelta(seconds=1))

    good = node_reputation(conn, honest, at=T0)
    bad = node_reputation(conn, cheat, at=T0)
    assert (good.v, good.gpus_verified, good.gpus_flagged) == (1.0, 2, 0)
    assert (bad.v, bad.gpus_verified, bad.gpus_flagged, bad.score) == (0.0, 1, 1, 0.0)
    assert good.score > 0
    shown = bad.as_dict()
    assert shown["inputs"]["V"] == 0.0 and shown["inputs"]["gpus_flagged"] == 1
    why = conn.execute("SELECT kind, gpu_uuid, evidence->>'virtualization_mode' FROM integrity_findings"
                       " WHERE node_id = %s AND resolved_at IS NULL", (cheat,)).fetchall()
    assert why == [("virtualized", "GPU-c2", "vgpu")]
