"""A node holds at most MAX_WAITERS_PER_NODE long-polls in the waiting room: a further poll releases its oldest
(204 at once), so one node token cannot pile up waiters (and their connections) without bound."""

from __future__ import annotations

import asyncio

from collector import proof as collector_proof
from tests.collector_harness import register
from tests.proofclient import Prover, proof_client, proofs_of  # noqa: F401


async def test_extra_long_polls_release_the_oldest(proof_client, operator_token):
    node_id, token = await register(proof_client, operator_token)
    prover = Prover(proof_client, node_id, token)
    limit = collector_proof.MAX_WAITERS_PER_NODE
    polls = []
    for _ in range(limit + 2):
        polls.append(asyncio.create_task(prover.poll(wait=20)))
        await asyncio.sleep(0.05)

    done, pending = await asyncio.wait(polls, timeout=3)

    assert [p for p in polls if p in done] == polls[:2]  # the two oldest were answered, the rest still wait
    assert all(p.result() is None for p in done)
    assert len(proofs_of(proof_client)._waiting[node_id]) == limit
    proofs_of(proof_client).close()
    assert await asyncio.gather(*pending) == [None] * limit
