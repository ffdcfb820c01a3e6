"""A root that arrives after the deadline is refused 409 late and recorded as the GPU's failed verdict."""

from __future__ import annotations

import asyncio

from tests.proofclient import (  # noqa: F401
    claiming_node,
    challenge_rows,
    commit_to,
    compute,
    offer_round,
    proof_client,
)


async def test_a_late_commit_answers_409_and_is_recorded_failed(proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-slow-0"])
    round_id, [offer] = await offer_round(proof_client, [prover])
    gpu = offer["gpus"][0]
    status, started = await prover.start(round_id)
    assert status == 200 and started["deadline_s"] >= gpu["budget_s"]
    work = commit_to(compute(started["seed"], node_id, gpu))

    await asyncio.sleep(started["deadline_s"] + 0.2)  # a right answer, too slow
    status, refused = await prover.commit(round_id, gpu["gpu_uuid"], work.root)

    assert status == 409 and refused["reason"] == "late", refused
    [row] = challenge_rows(dsn, node_id=node_id)
    assert row["verdict"] == "failed" and row["reason"].startswith("late: committed")
    assert row["seconds"] > gpu["budget_s"] and row["root"] == work.root.hex()
    status, again = await prover.commit(round_id, gpu["gpu_uuid"], work.root)
    assert status == 409 and again["reason"] == "duplicate"
    status, opened = await prover.open(round_id, gpu["gpu_uuid"], {"rows": [0, 1], "columns": [0, 1]}, work)
    assert status == 409 and opened["reason"] == "decided"
