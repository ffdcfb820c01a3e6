"""An answer replayed from an earlier round (its root and its openings) fails in a new round: new seed, new C."""

from __future__ import annotations

from tests.proofclient import Prover, challenge_rows, claiming_node, offer_round, proof_client  # noqa: F401


async def test_a_replayed_answer_fails_in_a_new_round(proof_client, operator_token, dsn):
    node_id, token, honest = await claiming_node(proof_client, operator_token, dsn, ["GPU-replay-0"])
    _, [first] = await offer_round(proof_client, [honest])
    assert (await honest.prove(first))["GPU-replay-0"][0] == 200
    recorded = honest.works["GPU-replay-0"]  # everything the first round's answer was

    replayer = Prover(proof_client, node_id, token, result=lambda gpu, c: recorded.c)
    second_id, [second] = await offer_round(proof_client, [replayer])
    status, verdict = (await replayer.prove(second))["GPU-replay-0"]

    assert second_id != first["round_id"]
    assert replayer.works["GPU-replay-0"].root == recorded.root  # the same commitment as before
    assert status == 422 and verdict["reason"].startswith("wrong result"), verdict
    assert [r["verdict"] for r in challenge_rows(dsn, node_id=node_id)] == ["passed", "failed"]
