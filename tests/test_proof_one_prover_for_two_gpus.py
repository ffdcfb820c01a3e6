"""Two claimed GPUs served by one device, one after the other, cannot both answer in time: the second is late."""

from __future__ import annotations

from fleetscope.gpu_models import lookup
from tests.collector_harness import register
from tests.proofclient import (  # noqa: F401
    A100,
    TEST_SCALE,
    Prover,
    challenge_rows,
    claim_gpus,
    offer_round,
    proof_client,
)


async def test_one_device_at_the_claimed_peak_passes_for_one_gpu_and_is_late_for_the_second(
        proof_client, operator_token, dsn):
    node_id, token = await register(proof_client, operator_token)
    claim_gpus(dsn, node_id, ["GPU-claimed-0", "GPU-claimed-1"])
    # The best a single real card could do: the claimed model's full datasheet peak, for each GPU in turn.
    peak = lookup(A100).fp16_tensor_tflops * 1e12 * TEST_SCALE
    one_device = Prover(proof_client, node_id, token, speed_flops=peak)

    _, [offer] = await offer_round(proof_client, [one_device])
    answers = await one_device.prove(offer)

    assert answers["GPU-claimed-0"][0] == 200, answers
    status, refused = answers["GPU-claimed-1"]
    assert status == 409 and refused["reason"] == "late", refused
    rows = challenge_rows(dsn, node_id=node_id)
    assert [r["verdict"] for r in rows] == ["passed", "failed"]
    assert rows[1]["seconds"] > rows[1]["budget_s"]
