"""A request's time is when its body arrived, not its headers: a host that sends the commit's headers at once and
its root after the deadline is late (otherwise any host gets the timers' grace on top of its deadline, and a
made-up tiny "seconds" and huge TFLOPS are recorded)."""

from __future__ import annotations

import asyncio
import json

from tests.collector_harness import bearer
from tests.proofclient import (  # noqa: F401
    claiming_node,
    challenge_rows,
    commit_to,
    compute,
    offer_round,
    proof_client,
)


async def test_a_root_sent_after_the_deadline_behind_early_headers_is_late(proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-trickle-0"])
    round_id, [offer] = await offer_round(proof_client, [prover])
    gpu = offer["gpus"][0]
    status, started = await prover.start(round_id)
    assert status == 200
    work = commit_to(compute(started["seed"], node_id, gpu))
    body = json.dumps({"round_id": round_id, "gpu_uuid": gpu["gpu_uuid"], "root": work.root.hex()}).encode()

    async def trickle():
        yield body[:1]  # the headers and one byte now...
        await asyncio.sleep(started["deadline_s"] + 0.5)  # ...the root only after the deadline
        yield body[1:]

    response = await proof_client.post("/api/v1/proof/commit", data=trickle(),
                                       headers={**bearer(token), "Content-Type": "application/json"})
    answer = await response.json()

    assert response.status == 409 and answer["reason"] == "late", answer
    [row] = challenge_rows(dsn, node_id=node_id)
    assert row["verdict"] == "failed" and row["seconds"] > gpu["budget_s"]
