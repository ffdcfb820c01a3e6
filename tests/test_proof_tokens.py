"""Only the challenged node's own token gets anywhere: a wrong token is 401, another node's is 404."""

from __future__ import annotations

import pytest

from tests.collector_harness import bearer, register
from tests.proofclient import (  # noqa: F401
    Prover,
    challenge_rows,
    claim_gpus,
    commit_to,
    compute,
    offer_round,
    proof_client,
)

STEPS = ["start", "commit", "open"]


@pytest.mark.parametrize("token", [None, "fsn_not-a-real-token", "Bearer"])
async def test_a_missing_or_wrong_token_is_refused_401_everywhere(proof_client, token):
    headers = bearer(token) if token else {}
    response = await proof_client.get("/api/v1/proof/challenge?wait=0", headers=headers)
    assert response.status == 401
    for step in STEPS:
        response = await proof_client.post(f"/api/v1/proof/{step}", json={"round_id": 1}, headers=headers)
        assert response.status == 401 and (await response.json())["reason"] in ("missing_token", "bad_token")


async def test_an_operator_token_is_not_a_node_token(proof_client, operator_token):
    response = await proof_client.get("/api/v1/proof/challenge?wait=0", headers=bearer(operator_token))
    assert response.status == 401


async def test_another_nodes_token_cannot_start_commit_or_open_its_round(proof_client, operator_token, dsn):
    node_id, token = await register(proof_client, operator_token, "chosen")
    other_id, other_token = await register(proof_client, operator_token, "other")
    claim_gpus(dsn, node_id, ["GPU-mine-0"])
    chosen = Prover(proof_client, node_id, token)
    intruder = Prover(proof_client, other_id, other_token)
    round_id, [offer] = await offer_round(proof_client, [chosen])
    gpu = offer["gpus"][0]

    status, refused = await intruder.start(round_id)
    assert status == 404 and refused["reason"] == "not_found"
    status, started = await chosen.start(round_id)
    assert status == 200
    work = commit_to(compute(started["seed"], node_id, gpu))
    status, refused = await intruder.commit(round_id, gpu["gpu_uuid"], work.root)
    assert status == 404
    status, named = await chosen.commit(round_id, gpu["gpu_uuid"], work.root)
    assert status == 200
    status, refused = await intruder.open(round_id, gpu["gpu_uuid"], named, work)
    assert status == 404
    status, verdict = await chosen.open(round_id, gpu["gpu_uuid"], named, work)
    assert status == 200 and verdict["verdict"] == "passed"
    assert [r["node_id"] for r in challenge_rows(dsn)] == [node_id]
