"""With the production writer behind it, an accepted push is in the database; a refused one is not."""

from __future__ import annotations

import asyncio

import psycopg

from collector.app import default_components, make_app
from tests.collector_harness import FLEET_PROM, collector_settings, push, register


async def wait_for_rows(dsn: str, sql: str, args: tuple, *, want: int, timeout_s: float = 10.0) -> list[tuple]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(sql, args).fetchall()
        if len(rows) >= want or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def test_a_push_reaches_the_database_through_the_writer_with_the_scraper_running(
        aiohttp_client, dsn, tmp_path, operator_token):
    settings = collector_settings(dsn, tmp_path)
    client = await aiohttp_client(make_app(settings, components=default_components(settings)))
    node_id, token = await register(client, operator_token, scrape_url=None)
    _, other_token = await register(client, operator_token, "refused")
    assert (await push(client, other_token, b"not {{ prometheus")).status == 400
    assert (await push(client, token, FLEET_PROM, gzipped=True)).status == 204

    observations = await wait_for_rows(
        dsn, "SELECT node_id, ok, source, collector_id FROM observations ORDER BY time", (), want=1)
    assert observations == [(node_id, True, "push", "test-collector:0")]
    gpus = await wait_for_rows(dsn, "SELECT gpu_uuid FROM gpus WHERE node_id = %s", (node_id,), want=8)
    assert len(gpus) == 8
    response = await client.get("/metrics")
    assert "fleetscope_collector_scrape_targets" in await response.text()  # the scraper shares the registry
