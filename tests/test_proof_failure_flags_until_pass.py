"""A failed proof opens a proof_failed finding for the GPU claim; another failure refreshes it; a pass resolves it."""

from __future__ import annotations

import numpy as np

from tests.proofclient import Prover, claiming_node, offer_round, open_findings, proof_client  # noqa: F401


async def test_a_failed_proof_flags_the_gpu_until_it_passes(proof_client, operator_token, dsn):
    node_id, token, cheat = await claiming_node(proof_client, operator_token, dsn, ["GPU-flaky-0"], result=lambda gpu, c: np.zeros_like(c))

    first, [offer] = await offer_round(proof_client, [cheat])
    assert (await cheat.prove(offer))["GPU-flaky-0"][0] == 422
    [(uuid, evidence, resolved_at, _)] = open_findings(dsn, node_id)
    assert uuid == "GPU-flaky-0" and resolved_at is None
    assert evidence["round_id"] == first and evidence["reason"].startswith("wrong result")

    second, [offer] = await offer_round(proof_client, [cheat])
    assert (await cheat.prove(offer))["GPU-flaky-0"][0] == 422
    [(_, evidence, resolved_at, _)] = open_findings(dsn, node_id)  # refreshed, not a second finding
    assert evidence["round_id"] == second and resolved_at is None

    honest = Prover(proof_client, node_id, token)
    third, [offer] = await offer_round(proof_client, [honest])
    assert (await honest.prove(offer))["GPU-flaky-0"][0] == 200
    [(_, _, resolved_at, resolution)] = open_findings(dsn, node_id)
    assert resolved_at is not None and resolution == f"passed proof in round {third}"
