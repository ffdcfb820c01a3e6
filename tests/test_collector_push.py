"""A node registers, pushes, and its observation is committed as the collector saw it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import psycopg

from collector.parse import PayloadParser
from fleetscope.uptime import slot_of
from tests.collector_harness import (
    FLEET_OPENMETRICS,
    FLEET_PROM,
    OPENMETRICS_TYPE,
    push,
    register,
    sample,
    scrape_metrics,
)


async def test_a_registered_node_appears_and_its_push_is_committed_with_the_receive_time(
        client, storage, operator_token, dsn):
    node_id, node_token = await register(client, operator_token, "gpu-box-1", interval_s=15)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT name, interval_s, grace_s, scrape_url FROM nodes WHERE node_id = %s",
                           (node_id,)).fetchone()
    assert row == ("gpu-box-1", 15, 45, None)

    before = datetime.now(timezone.utc)
    response = await push(client, node_token, FLEET_PROM)
    after = datetime.now(timezone.utc)
    assert response.status == 204, await response.text()

    [batch] = storage.committed
    assert batch.node_id == node_id
    assert batch.source == "push" and batch.ok and batch.latency_ms is None and batch.error is None
    assert before <= batch.received_at <= after and batch.received_at.tzinfo is not None
    assert batch.slot == slot_of(batch.received_at, 15)
    expected = PayloadParser().parse(FLEET_PROM)
    assert batch.payload.samples == expected.samples
    assert batch.payload.identities == expected.identities
    assert len(batch.payload.samples) == 8 and batch.payload.lost == expected.lost

    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_pushes_total", result="accepted") == 1


async def test_a_gzipped_push_is_accepted_and_reads_the_same_as_plain_text(client, storage, operator_token):
    _, token_a = await register(client, operator_token, "a")
    _, token_b = await register(client, operator_token, "b")
    assert (await push(client, token_a, FLEET_PROM)).status == 204
    assert (await push(client, token_b, FLEET_PROM, gzipped=True)).status == 204
    plain, gzipped = storage.committed
    assert plain.payload == gzipped.payload


async def test_an_openmetrics_push_is_read_as_openmetrics(client, storage, operator_token):
    _, token = await register(client, operator_token)
    response = await push(client, token, FLEET_OPENMETRICS, content_type=OPENMETRICS_TYPE, gzipped=True)
    assert response.status == 204, await response.text()
    [batch] = storage.committed
    assert batch.payload == PayloadParser().parse(FLEET_OPENMETRICS, content_type=OPENMETRICS_TYPE)


async def test_the_node_id_comes_from_the_token_whatever_the_body_or_headers_say(client, storage, operator_token):
    node_a, token_a = await register(client, operator_token, "a")
    node_b, _ = await register(client, operator_token, "b")
    response = await push(client, token_a, FLEET_PROM, headers={"X-Node-Id": str(node_b)})
    assert response.status == 204
    assert [b.node_id for b in storage.committed] == [node_a]


async def test_a_node_may_push_again_after_half_its_interval_and_then_takes_the_warm_path(
        client, storage, operator_token):
    _, token = await register(client, operator_token, interval_s=5)
    _, other = await register(client, operator_token, "other", interval_s=5)
    assert (await push(client, token)).status == 204
    assert (await push(client, other)).status == 204  # its own cache: a cold parse of its own
    too_soon = await push(client, token)
    assert too_soon.status == 429 and too_soon.headers["Retry-After"] in ("1", "2", "3")
    await asyncio.sleep(2.6)  # spacing = max(1 s, 5 s / 2)
    assert (await push(client, token)).status == 204
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_push_parses_total", path="cold") == 2
    assert sample(metrics, "fleetscope_collector_push_parses_total", path="warm") == 1
    assert len(storage.committed) == 3
