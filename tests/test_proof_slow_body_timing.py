"""A request's time is when its body arrived, not its headers: a host that sends the commit's headers at once and
its root after the deadline is late (otherwise any host gets the timers' grace on top of its deadline, and a
made-up tiny "seconds" and huge TFLOPS are recorded)."""

from __future__ import annotations

import asyncio
import json

from tests.collector_harness import bearer
from tests.proofclient import challenge_rows, proof_client, started_proof  # noqa: F401


async def test_a_root_sent_after_the_deadline_behind_early_headers_is_late(proof_client, operator_token, dsn):
    p = await started_proof(proof_client, operator_token, dsn, "GPU-trickle-0")
    body = json.dumps({"round_id": p.round_id, "gpu_uuid": p.gpu["gpu_uuid"], "root": p.work.root.hex()}).encode()

    async def trickle():
        yield body[:1]  # the headers and one byte now...
        await asyncio.sleep(p.started["deadline_s"] + 0.5)  # ...the root only after the deadline
        yield body[1:]

    response = await proof_client.post("/api/v1/proof/commit", data=trickle(),
                                       headers={**bearer(p.token), "Content-Type": "application/json"})
    answer = await response.json()

    assert response.status == 409 and answer["reason"] == "late", answer
    [row] = challenge_rows(dsn, node_id=p.node_id)
    assert row["verdict"] == "failed" and row["seconds"] > p.gpu["budget_s"]
