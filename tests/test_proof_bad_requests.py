"""Malformed proof requests are refused with a reason (400), oversized openings with 413; nothing is decided."""

from __future__ import annotations

import json

import pytest

from collector.proof import open_body_limit
from fleetscope import proof
from tests.collector_harness import bearer, register
from tests.proofclient import (  # noqa: F401
    claiming_node,
    challenge_rows,
    commit_to,
    compute,
    offer_round,
    proof_client,
)


@pytest.mark.parametrize("wait", ["31", "-1", "soon", "nan"])
async def test_a_bad_wait_is_refused(proof_client, operator_token, wait):
    _, token = await register(proof_client, operator_token)
    response = await proof_client.get(f"/api/v1/proof/challenge?wait={wait}", headers=bearer(token))
    assert response.status == 400 and (await response.json())["reason"] == "invalid_field"


async def test_malformed_commitments_and_openings_are_400_and_an_oversized_opening_413(
        proof_client, operator_token, dsn):
    node_id, token, prover = await claiming_node(proof_client, operator_token, dsn, ["GPU-fuzz-0"])
    round_id, [offer] = await offer_round(proof_client, [prover])
    gpu = offer["gpus"][0]
    _, started = await prover.start(round_id)
    work = commit_to(compute(started["seed"], node_id, gpu))
    for root in ["zz" * 32, "ab", 12, None]:
        status, refused = await prover.commit(round_id, gpu["gpu_uuid"], root)
        assert status == 400 and refused["reason"] == "invalid_field", refused
    status, named = await prover.commit(round_id, gpu["gpu_uuid"], work.root)
    assert status == 200 and len(named["rows"]) == len(named["columns"]) == proof.CHECKED_ENTRIES
    good = work.openings(named)
    asked = proof.checked_leaves(gpu["n"], named["rows"], named["columns"])
    assert [o["leaf"] for o in good] == asked and len(good) >= 2

    async def open_raw(data: bytes | str):
        response = await proof_client.post("/api/v1/proof/open", data=data, headers=bearer(token))
        return response.status, await response.json()

    def body(opened) -> dict:
        return {"round_id": round_id, "gpu_uuid": gpu["gpu_uuid"], "openings": opened}

    assert (await open_raw("{not json"))[1]["reason"] == "invalid_json"
    not_asked = next(leaf for leaf in range(proof.leaf_count(gpu["n"])) if leaf not in asked)
    cases = [
        [dict(good[0], chunk="***not base64***"), *good[1:]],
        [dict(good[0], chunk="QUFB" * 400), *good[1:]],  # longer than a chunk
        [dict(good[0], path=["xyz"]), *good[1:]],
        [dict(good[0], leaf=not_asked), *good[1:]],  # holds no named entry
        [dict(good[0], leaf=proof.leaf_count(gpu["n"])), *good[1:]],  # outside C
        [dict(good[0], leaf="0"), *good[1:]],
        [good[0], good[0]],
        [*good, good[0]],  # more records than leaves asked for
        [],
        "openings",
    ]
    for opened in cases:
        status, refused = await open_raw(json.dumps(body(opened)))
        assert status == 400 and refused["reason"] == "invalid_field", (opened, refused)
    oversized = json.dumps(body(good)) + " " * open_body_limit(gpu["n"])
    status, refused = await open_raw(oversized)
    assert status == 413 and refused["reason"] == "body_too_large"

    [row] = challenge_rows(dsn, node_id=node_id)
    assert row["verdict"] is None  # none of that decided anything: the real opening still counts
    status, verdict = await prover.open(round_id, gpu["gpu_uuid"], named, work)
    assert status == 200 and verdict["verdict"] == "passed"


def test_an_open_body_is_a_few_kib_per_opening_even_for_an_h100():
    # 99,584 x 99,584: 38.7 M leaves, paths of 26 hashes; 8 records of about 3.2 KiB.
    n = 99_584
    assert proof.leaf_count(n) == n * n // proof.CHUNK_ENTRIES
    assert 8 * 3_000 < open_body_limit(n) < 8 * 3_700 + 4096
