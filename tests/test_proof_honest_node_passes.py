"""An honest node answers a round in time with the right C: its GPU passes, with what auditors re-check stored."""

from __future__ import annotations

import base64

from fleetscope import proof
from fleetscope.gpu_models import lookup
from tests.collector_harness import sample, scrape_metrics
from tests.proofclient import A100, challenge_rows, claiming_node, offer_round, proof_client  # noqa: F401


async def test_an_honest_node_passes_with_seconds_and_tflops(proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-honest-0"])

    round_id, [offer] = await offer_round(proof_client, [prover])
    assert offer["protocol"] == 1 and offer["round_id"] == round_id and offer["node_id"] == node_id
    size = proof.size_for(lookup(A100),
                          memory_bytes=80 * 2**30, scale=1e-6)
    assert offer["gpus"] == [{"gpu_uuid": "GPU-honest-0", "model": A100, "n": size.n, "k": size.k,
                              "reference_tflops": size.reference_tflops, "budget_s": size.budget_s}]

    answers = await prover.prove(offer)
    status, verdict = answers["GPU-honest-0"]
    assert status == 200, verdict
    assert verdict["verdict"] == "passed" and 0 < verdict["seconds"] < size.budget_s and verdict["tflops"] > 0

    [row] = challenge_rows(dsn, node_id=node_id)
    assert (row["verdict"], row["reason"]) == ("passed", None)
    assert row["seconds"] == verdict["seconds"] and row["tflops"] == verdict["tflops"]
    assert row["root"] == prover.works["GPU-honest-0"].root.hex()
    assert len(row["rows"]) == len(row["columns"]) == proof.CHECKED_ENTRIES
    assert 0 <= row["rtt_s"] <= proof.MAX_RTT_S and row["decided_at"] >= row["committed_at"] >= row["started_at"]
    # Stored exactly as sent: one record per chunk holding a named entry, each chunk C's own bytes.
    work = prover.works["GPU-honest-0"]
    assert row["openings"] == work.openings(row)
    flat = work.c.reshape(-1)
    for opened in row["openings"]:
        start = opened["leaf"] * proof.CHUNK_ENTRIES
        assert base64.b64decode(opened["chunk"]) == flat[start:start + proof.CHUNK_ENTRIES].astype("<f4").tobytes()
    assert [o["leaf"] for o in row["openings"]] == proof.checked_leaves(size.n, row["rows"], row["columns"])

    metrics = await scrape_metrics(proof_client)
    assert sample(metrics, "fleetscope_proof_rounds_total") == 1
    assert sample(metrics, "fleetscope_proof_verdicts_total", verdict="passed") == 1
    assert sample(metrics, "fleetscope_proof_verify_seconds_count") == 1
