"""A root that arrives after the deadline is refused 409 late and recorded as the GPU's failed verdict."""

from __future__ import annotations

import asyncio

from tests.proofclient import challenge_rows, proof_client, started_proof  # noqa: F401


async def test_a_late_commit_answers_409_and_is_recorded_failed(proof_client, operator_token, dsn):
    p = await started_proof(proof_client, operator_token, dsn, "GPU-slow-0")
    assert p.started["deadline_s"] >= p.gpu["budget_s"]

    await asyncio.sleep(p.started["deadline_s"] + 0.2)  # a right answer, too slow
    status, refused = await p.prover.commit(p.round_id, p.gpu["gpu_uuid"], p.work.root)

    assert status == 409 and refused["reason"] == "late", refused
    [row] = challenge_rows(dsn, node_id=p.node_id)
    assert row["verdict"] == "failed" and row["reason"].startswith("late: committed")
    assert row["seconds"] > p.gpu["budget_s"] and row["root"] == p.work.root.hex()
    status, again = await p.prover.commit(p.round_id, p.gpu["gpu_uuid"], p.work.root)
    assert status == 409 and again["reason"] == "duplicate"
    status, opened = await p.prover.open(p.round_id, p.gpu["gpu_uuid"], {"rows": [0, 1], "columns": [0, 1]}, p.work)
    assert status == 409 and opened["reason"] == "decided"
