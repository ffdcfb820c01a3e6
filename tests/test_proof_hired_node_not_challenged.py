"""A node with a running job is never challenged (a hired GPU is never proved); once the job ends it may be."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.collector_harness import ADMIN_TOKEN, bearer, register
from tests.proofclient import Prover, claim_gpus, offer_round, proof_client  # noqa: F401


async def test_a_node_with_a_running_job_is_not_challenged(proof_client, operator_token, dsn):
    hired_id, hired_token = await register(proof_client, operator_token, "hired")
    idle_id, idle_token = await register(proof_client, operator_token, "idle")
    claim_gpus(dsn, hired_id, ["GPU-hired-0"])
    claim_gpus(dsn, idle_id, ["GPU-idle-0"])
    started = datetime.now(timezone.utc) - timedelta(minutes=5)
    job = {"job_id": "job-1", "node_id": hired_id, "gpu_count": 1, "price_per_gpu_hour": 1.0,
           "started_at": started.isoformat(), "ended_at": None, "status": "running"}
    response = await proof_client.post("/api/v1/jobs", json=job, headers=bearer(ADMIN_TOKEN))
    assert response.status == 201
    hired, idle = Prover(proof_client, hired_id, hired_token), Prover(proof_client, idle_id, idle_token)

    round_id, [hired_offer, idle_offer] = await offer_round(proof_client, [hired, idle], wait=1)

    assert round_id is not None and hired_offer is None
    assert [g["gpu_uuid"] for g in idle_offer["gpus"]] == ["GPU-idle-0"]

    ended = dict(job, ended_at=(datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat(), status="succeeded")
    response = await proof_client.post("/api/v1/jobs", json=ended, headers=bearer(ADMIN_TOKEN))
    assert response.status == 200
    _, [hired_offer] = await offer_round(proof_client, [hired], wait=1)
    assert [g["gpu_uuid"] for g in hired_offer["gpus"]] == ["GPU-hired-0"]
