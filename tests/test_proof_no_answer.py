"""A node that never asks for its seed gets no answer (not failed) and stays without a pass."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from collector import proof_verdicts
from collector.proof_rounds import utcnow
from fleetscope import proof
from tests.proofclient import (  # noqa: F401
    claiming_node,
    challenge_rows,
    offer_round,
    open_findings,
    proof_client,
    proofs_of,
)


def proved(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(proof.PROVED_SQL, {"at": utcnow()}).fetchall()


async def test_a_node_that_never_starts_gets_no_answer_and_no_pass(proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-mute-0", "GPU-mute-1"])
    round_id, [offer] = await offer_round(proof_client, [prover])
    assert len(offer["gpus"]) == 2
    [first, _] = challenge_rows(dsn, node_id=node_id)

    proofs = proofs_of(proof_client)
    assert await proofs.expire(now=first["offered_at"] + timedelta(seconds=proof.START_TIMEOUT_S - 1)) == 0
    after = first["offered_at"] + timedelta(seconds=proof.START_TIMEOUT_S + proof_verdicts.TIMER_GRACE_S + 0.1)
    assert await proofs.expire(now=after) == 2

    rows = challenge_rows(dsn, node_id=node_id)
    assert [(r["verdict"], r["reason"]) for r in rows] == [("no_answer", proof_verdicts.NO_START)] * 2
    assert open_findings(dsn, node_id) == []  # not flagged: unverified
    assert proved(dsn) == []
    status, refused = await prover.start(round_id)
    assert status == 409 and refused["reason"] == "expired"


async def test_a_start_after_the_start_timeout_is_refused_and_closes_the_offer(proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-sleepy-0"])
    round_id, _ = await offer_round(proof_client, [prover])
    proofs = proofs_of(proof_client)
    proofs.clock = lambda: utcnow() + timedelta(seconds=proof.START_TIMEOUT_S + 0.5)  # before any timer ran

    status, refused = await prover.start(round_id)

    assert status == 409 and refused["reason"] == "expired"
    [row] = challenge_rows(dsn, node_id=node_id)
    assert (row["verdict"], row["started_at"]) == ("no_answer", None)
