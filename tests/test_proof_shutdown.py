"""A collector shutting down answers its waiting provers' long-polls (204) at once instead of waiting them out."""

from __future__ import annotations

import asyncio

from tests.collector_harness import register
from tests.proofclient import Prover, proof_client, proofs_of  # noqa: F401


async def test_shutdown_answers_waiting_long_polls(proof_client, operator_token):
    node_id, token = await register(proof_client, operator_token)
    poll = asyncio.create_task(Prover(proof_client, node_id, token).poll(wait=30))
    while node_id not in proofs_of(proof_client).waiting_nodes:
        await asyncio.sleep(0.01)

    await proof_client.server.app.shutdown()

    assert await asyncio.wait_for(poll, 2) is None
