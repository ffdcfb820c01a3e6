"""Wrong answers fail with the reason: garbage C, and chunks that do not match the committed root."""

from __future__ import annotations

import numpy as np

from fleetscope import proof

from tests.collector_harness import register
from tests.proofclient import (  # noqa: F401
    Prover,
    challenge_rows,
    claim_gpus,
    commit_to,
    offer_round,
    proof_client,
    started_proof,
)


async def test_garbage_c_fails_as_a_wrong_result(proof_client, operator_token, dsn):
    node_id, token = await register(proof_client, operator_token)
    claim_gpus(dsn, node_id, ["GPU-garbage-0"])
    rng = np.random.default_rng(7)
    prover = Prover(proof_client, node_id, token,
                    result=lambda gpu, c: rng.uniform(-1, 1, c.shape).astype(np.float32))

    _, [offer] = await offer_round(proof_client, [prover])
    status, verdict = (await prover.prove(offer))["GPU-garbage-0"]

    assert status == 422 and verdict["verdict"] == "failed", verdict
    assert verdict["reason"].startswith("wrong result: C[")
    [row] = challenge_rows(dsn, node_id=node_id)
    assert (row["verdict"], row["reason"]) == ("failed", verdict["reason"])
    named = proof.checked_leaves(offer["gpus"][0]["n"], row["rows"], row["columns"])
    assert [o["leaf"] for o in row["openings"]] == named and row["seconds"] is not None


async def test_chunks_that_do_not_match_the_committed_root_fail(proof_client, operator_token, dsn):
    p = await started_proof(proof_client, operator_token, dsn, "GPU-switch-0")
    other = commit_to(np.zeros((p.gpu["n"], p.gpu["n"]), dtype=np.float32))  # commits to one C ...
    status, named = await p.prover.commit(p.round_id, p.gpu["gpu_uuid"], other.root)
    assert status == 200
    status, verdict = await p.prover.open(p.round_id, p.gpu["gpu_uuid"], named, p.work)  # ... opens the honest one

    assert status == 422 and "does not match the commitment" in verdict["reason"], verdict
    [row] = challenge_rows(dsn, node_id=p.node_id)
    assert row["verdict"] == "failed" and row["root"] == other.root.hex()
