"""A hung database never hangs a request (issue 15, item 3).

With the database frozen (SIGSTOP), every request that needs it answers 503
with Retry-After within --db-timeout-s, and /healthz within 2 s: before, a
registration and a push with an uncached token waited out the freeze, and
/healthz took 12 s (psycopg waits up to 10 s for a cancelled query).
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from collector.app import make_app
from collector.ingest import MemoryAppendable
from fleetscope.registry import create_operator, register_node
from tests.collector_harness import FLEET_PROM, bearer, collector_settings, push
from tests.frozen_database import frozen

DB_TIMEOUT_S = 1.0
# The deadline, plus the time a loaded 2-core test machine may take to answer.
SLACK_S = 1.0
# A test waits at most this long for an answer, so that the old behaviour fails instead of hanging.
GIVE_UP_S = 15.0


@pytest.fixture
async def frozen_setup(aiohttp_client, own_server, tmp_path):
    server, dsn = own_server
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, operator_token = create_operator(conn, "acme")
        node_token = register_node(conn, operator_id=operator_id, name="n").node_token
    settings = collector_settings(dsn, tmp_path, db_timeout_s=DB_TIMEOUT_S, token_cache_s=0)
    client = await aiohttp_client(make_app(settings, appendable=MemoryAppendable()))
    assert (await client.get("/healthz")).status == 200  # the pool is open and warm
    yield server, client, operator_token, node_token
    await client.close()


async def _timed(request):
    started = time.monotonic()
    async with asyncio.timeout(GIVE_UP_S):
        response = await request
        await response.read()
    return response, time.monotonic() - started


async def test_requests_answer_503_with_retry_after_within_the_deadline_while_the_database_is_frozen(frozen_setup):
    server, client, operator_token, node_token = frozen_setup
    with frozen(server):
        for name, request in [
            ("registration", client.post("/api/v1/nodes", json={"name": "late"}, headers=bearer(operator_token))),
            ("uncached push", push(client, node_token, FLEET_PROM)),
            ("channels", client.get("/api/v1/channels", headers=bearer(operator_token))),
            # The proof of GPU's steps that read and write the database (the long-poll only waits).
            ("proof start", client.post("/api/v1/proof/start", json={"round_id": 1}, headers=bearer(node_token))),
            ("proof commit", client.post("/api/v1/proof/commit", json={"round_id": 1, "gpu_uuid": "GPU-x",
                                                                       "root": "00" * 32},
                                         headers=bearer(node_token))),
            ("proof open", client.post("/api/v1/proof/open", json={"round_id": 1, "gpu_uuid": "GPU-x",
                                                                   "openings": []}, headers=bearer(node_token))),
        ]:
            response, took = await _timed(request)
            assert response.status == 503, name
            assert response.headers.get("Retry-After"), name
            assert (await response.json())["reason"] == "database_unavailable", name
            assert took <= DB_TIMEOUT_S + SLACK_S, f"{name} took {took:.1f} s"


async def test_healthz_answers_within_two_seconds_while_the_database_is_frozen(frozen_setup):
    server, client, _, _ = frozen_setup
    with frozen(server):
        response, took = await _timed(client.get("/healthz"))
    assert response.status == 503 and (await response.json())["ok"] is False
    assert took <= 2.0 + 0.5, f"/healthz took {took:.1f} s"


async def test_the_collector_answers_again_once_the_database_thaws(frozen_setup):
    server, client, operator_token, _ = frozen_setup
    with frozen(server):
        response, _ = await _timed(client.get("/api/v1/channels", headers=bearer(operator_token)))
        assert response.status == 503
    for _ in range(100):  # abandoned queries end, and connections are checked or replaced
        response = await client.get("/api/v1/channels", headers=bearer(operator_token))
        if response.status == 200:
            break
        await asyncio.sleep(0.2)
    assert response.status == 200


async def test_the_proof_steps_answer_503_within_the_deadline_for_a_node_whose_token_is_cached(
        aiohttp_client, own_server, tmp_path):
    """Past authentication (a cached token), start, commit and open still answer within the deadline."""
    server, dsn = own_server
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        node_token = register_node(conn, operator_id=operator_id, name="n").node_token
    settings = collector_settings(dsn, tmp_path, db_timeout_s=DB_TIMEOUT_S, token_cache_s=600)
    client = await aiohttp_client(make_app(settings, appendable=MemoryAppendable()))
    try:
        # The token is now cached: no request below needs the database to authenticate.
        assert (await client.get("/api/v1/proof/challenge?wait=0", headers=bearer(node_token))).status == 204
        with frozen(server):
            for path, body in [("start", {"round_id": 1}),
                               ("commit", {"round_id": 1, "gpu_uuid": "GPU-x", "root": "00" * 32})]:
                response, took = await _timed(client.post(f"/api/v1/proof/{path}", json=body,
                                                          headers=bearer(node_token)))
                assert response.status == 503 and response.headers.get("Retry-After"), path
                assert took <= DB_TIMEOUT_S + SLACK_S, f"{path} took {took:.1f} s"
    finally:
        await client.close()
