"""Unanswered steps are decided by timers: no root by the deadline and entries not opened fail; a restart closes
what an earlier process left undecided as no answer (hosts are not punished for our restart)."""

from __future__ import annotations

from datetime import timedelta

from collector import proof_verdicts
from collector.app import make_app, proof_component
from collector.ingest import MemoryAppendable
from collector.proof_rounds import utcnow
from fleetscope import proof
from tests.proofclient import (  # noqa: F401
    claiming_node,
    challenge_rows,
    commit_to,
    compute,
    offer_round,
    open_findings,
    proof_client,
    proof_settings,
    proofs_of,
)


async def test_a_started_challenge_without_a_root_by_the_deadline_fails(proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-quiet-0"])
    round_id, _ = await offer_round(proof_client, [prover])
    assert (await prover.start(round_id))[0] == 200
    [row] = challenge_rows(dsn, node_id=node_id)
    deadline = row["offered_at"] + timedelta(seconds=row["budget_s"] + row["rtt_s"])

    proofs = proofs_of(proof_client)
    assert await proofs.expire(now=deadline) == 0  # in flight, judged by its receive time
    assert await proofs.expire(now=deadline + timedelta(seconds=proof_verdicts.TIMER_GRACE_S + 0.1)) == 1

    [row] = challenge_rows(dsn, node_id=node_id)
    assert (row["verdict"], row["reason"]) == ("failed", "late: no commitment by the deadline")
    assert [f[0] for f in open_findings(dsn, node_id)] == ["GPU-quiet-0"]


async def test_a_commitment_whose_entries_are_not_opened_fails(proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-shy-0", "GPU-shy-1"])
    round_id, [offer] = await offer_round(proof_client, [prover])
    status, started = await prover.start(round_id)
    works = {g["gpu_uuid"]: commit_to(compute(started["seed"], node_id, g)) for g in offer["gpus"]}
    named = {}
    for uuid, work in works.items():
        status, answer = await prover.commit(round_id, uuid, work.root)
        assert status == 200
        named[uuid] = answer
    [shy0, _] = challenge_rows(dsn, node_id=node_id)

    proofs = proofs_of(proof_client)
    later = shy0["committed_at"] + timedelta(seconds=proof.OPEN_TIMEOUT_S + proof_verdicts.TIMER_GRACE_S + 0.1)
    assert await proofs.expire(now=later) == 2
    rows = challenge_rows(dsn, node_id=node_id)
    assert [(r["verdict"], r["reason"]) for r in rows] == [("failed", "entries not opened")] * 2
    status, refused = await prover.open(round_id, "GPU-shy-0", named["GPU-shy-0"], works["GPU-shy-0"])
    assert status == 409 and refused["reason"] == "decided"


async def test_entries_opened_after_the_open_timeout_are_refused_late(proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-tardy-0"])
    round_id, [offer] = await offer_round(proof_client, [prover])
    gpu = offer["gpus"][0]
    _, started = await prover.start(round_id)
    work = commit_to(compute(started["seed"], node_id, gpu))
    _, named = await prover.commit(round_id, gpu["gpu_uuid"], work.root)
    proofs_of(proof_client).clock = lambda: utcnow() + timedelta(seconds=proof.OPEN_TIMEOUT_S + 1)

    status, refused = await prover.open(round_id, gpu["gpu_uuid"], named, work)

    assert status == 409 and refused["reason"] == "late"
    [row] = challenge_rows(dsn, node_id=node_id)
    assert (row["verdict"], row["reason"]) == ("failed", "entries not opened")


async def test_a_restarted_collector_closes_its_undecided_challenges_as_no_answer(
        aiohttp_client, proof_client, operator_token, dsn, tmp_path):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-cut-0"])
    round_id, _ = await offer_round(proof_client, [prover])
    assert (await prover.start(round_id))[0] == 200
    await proof_client.close()  # the collector stops mid-round

    restarted = await aiohttp_client(make_app(proof_settings(dsn, tmp_path), appendable=MemoryAppendable(),
                                              components=[proof_component]))
    try:
        [row] = challenge_rows(dsn, node_id=node_id)
        assert (row["verdict"], row["reason"]) == ("no_answer", proof_verdicts.RESTARTED)
        assert open_findings(dsn, node_id) == []
    finally:
        await restarted.close()
