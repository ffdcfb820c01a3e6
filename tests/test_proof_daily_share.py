"""A GPU is never asked for more than 1 % of its day: a node whose proofs would pass that is not challenged."""

from __future__ import annotations

import psycopg

from fleetscope import proof
from tests.collector_harness import register
from tests.proofclient import Prover, claim_gpus, offer_round, proof_client  # noqa: F401


def spend(dsn: str, node_id: int, gpu_uuid: str, seconds: float) -> None:
    """Earlier challenges of this claim in the last 24 h, worth ``seconds`` of budget."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        round_id = conn.execute("INSERT INTO proof_rounds (opened_at, seed, protocol_version, scale, share)"
                                " VALUES (now() - interval '1 hour', %s, 1, 1, 1) RETURNING round_id",
                                ("00" * 32,)).fetchone()[0]
        conn.execute("INSERT INTO proof_challenges (round_id, node_id, gpu_uuid, model, n, k, reference_tflops,"
                     " budget_s, offered_at, verdict, decided_at) VALUES (%s, %s, %s, 'x', 64, 64, 1, %s,"
                     " now() - interval '1 hour', 'passed', now() - interval '1 hour')",
                     (round_id, node_id, gpu_uuid, seconds))


async def test_a_node_at_its_daily_share_is_not_challenged(proof_client, operator_token, dsn):
    busy_id, busy_token = await register(proof_client, operator_token, "busy")
    fresh_id, fresh_token = await register(proof_client, operator_token, "fresh")
    claim_gpus(dsn, busy_id, ["GPU-busy-0", "GPU-busy-1"])
    claim_gpus(dsn, fresh_id, ["GPU-fresh-0"])
    day_limit = proof.MAX_SHARE_OF_DAY * 86400
    spend(dsn, busy_id, "GPU-busy-1", day_limit - 1.0)  # one more proof of GPU-busy-1 would pass 1 %
    spend(dsn, fresh_id, "GPU-fresh-0", day_limit / 2)
    busy, fresh = Prover(proof_client, busy_id, busy_token), Prover(proof_client, fresh_id, fresh_token)

    round_id, [busy_offer, fresh_offer] = await offer_round(proof_client, [busy, fresh], wait=1)

    assert round_id is not None and busy_offer is None
    assert [g["gpu_uuid"] for g in fresh_offer["gpus"]] == ["GPU-fresh-0"]
