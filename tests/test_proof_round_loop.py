"""The collector's own round loop opens rounds at random gaps among the waiting nodes, and an honest one passes."""

from __future__ import annotations

import secrets

from collector.app import make_app, proof_component
from collector.ingest import MemoryAppendable
from collector.proof_rounds import GAP_HIGH, GAP_LOW, gap_s
from tests.collector_harness import register, sample, scrape_metrics
from tests.proofclient import Prover, challenge_rows, claim_gpus, proof_settings


def test_gaps_are_uniform_between_half_and_one_and_a_half_intervals():
    gaps = [gap_s(3600, secrets.SystemRandom()) for _ in range(2000)]
    assert GAP_LOW * 3600 <= min(gaps) < 0.55 * 3600 and 1.45 * 3600 < max(gaps) <= GAP_HIGH * 3600


async def test_the_round_loop_challenges_a_waiting_node_which_passes(aiohttp_client, operator_token, dsn, tmp_path):
    settings = proof_settings(dsn, tmp_path, proof_interval_s=1.0)
    client = await aiohttp_client(make_app(settings, appendable=MemoryAppendable(), components=[proof_component]))
    try:
        node_id, token = await register(client, operator_token)
        claim_gpus(dsn, node_id, ["GPU-looped-0"])
        prover = Prover(client, node_id, token)
        offer = await prover.poll(wait=5)  # the next round comes within 1.5 s
        assert offer is not None
        metrics = await scrape_metrics(client)
        assert sample(metrics, "fleetscope_proof_waiting_nodes") == 0  # the poll has been answered
        assert (await prover.prove(offer))["GPU-looped-0"][0] == 200
        [row] = challenge_rows(dsn, node_id=node_id)
        assert row["verdict"] == "passed"
        assert sample(await scrape_metrics(client), "fleetscope_proof_rounds_total") >= 1
    finally:
        await client.close()
