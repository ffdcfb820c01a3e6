"""The whole collector through failures: a database killed mid-load, a collector restarted mid-load."""

from __future__ import annotations

import asyncio
import time

import psycopg

from collector.app import default_components, make_app, scraper_component
from exporters.simfleet import SimServer, load_fleet, register_fleet
from fleetscope.registry import create_operator, register_node
from tests.collector_harness import FLEET_PROM, collector_settings, push


async def wait_until(predicate, *, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_database_killed_mid_load_loses_no_accepted_push_and_duplicates_none(
        aiohttp_client, own_server, open_tmp):
    server, dsn = own_server
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        nodes = [register_node(conn, operator_id=operator_id, name=f"n{i}", interval_s=5) for i in range(40)]
    settings = collector_settings(dsn, open_tmp, push_min_interval_s=0)
    client = await aiohttp_client(make_app(settings, components=[]))
    accepted = {n.node_id: 0 for n in nodes}

    async def round_of_pushes() -> None:
        for n in nodes:
            response = await push(client, n.node_token, FLEET_PROM, gzipped=True)
            if response.status == 204:
                accepted[n.node_id] += 1
            else:
                assert response.status == 503, await response.text()  # refused, so not accepted
        await asyncio.sleep(2.6)  # the per-node spacing at a 5 s interval

    await round_of_pushes()
    await asyncio.to_thread(server.stop, immediate=True)
    await round_of_pushes()
    await round_of_pushes()
    await asyncio.to_thread(server.ensure_running)
    await round_of_pushes()
    assert sum(accepted.values()) >= 3 * len(nodes), "pushes were accepted while the database was down"
    metrics = await (await client.get("/metrics")).text()
    assert "fleetscope_writer_groups_total{result=\"spooled\"}" in metrics
    await client.close()  # the writer writes what is queued and drains its spool

    with psycopg.connect(dsn) as conn:
        observed = dict(conn.execute("SELECT node_id, count(*) FROM observations GROUP BY node_id").fetchall())
        samples = dict(conn.execute("SELECT node_id, count(*) FROM gpu_samples GROUP BY node_id").fetchall())
    assert observed == accepted, "every accepted push is one observation, exactly once"
    assert samples == {node: 8 * count for node, count in accepted.items()}


async def test_a_collector_restarted_mid_load_duplicates_nothing_and_misses_at_most_one_interval(
        aiohttp_client, dsn, open_tmp):
    fleet = load_fleet(7, [{"profile": "healthy", "count": 12, "gpus": 2}])
    interval = 5
    async with SimServer(fleet) as sim:
        with psycopg.connect(dsn, autocommit=True) as conn:
            register_fleet(conn, fleet, sim.base_url, "sim", interval_s=interval)
        settings = collector_settings(dsn, open_tmp)
        first = await aiohttp_client(make_app(settings, components=[scraper_component]))
        await asyncio.sleep(2 * interval + 1)
        await first.close()  # SIGTERM-like: the writer writes what it has
        second = await aiohttp_client(make_app(settings, components=default_components(settings)))
        await asyncio.sleep(2 * interval + 1)
        await second.close()

    with psycopg.connect(dsn) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (node_id, time)) FROM observations").fetchone()
        gaps = conn.execute("""
            SELECT node_id, max(extract(epoch FROM time - prev)) FROM (
                SELECT node_id, time, lag(time) OVER (PARTITION BY node_id ORDER BY time) AS prev
                  FROM observations) o
             GROUP BY node_id""").fetchall()
    assert total == distinct, "no duplicate observations"
    assert len(gaps) == len(fleet)
    # Scrapes are due at fixed per-node offsets, so a restart costs at most
    # the one scrape due while no collector ran: a gap of at most two
    # intervals (a second of scheduling slack), never three.
    missed = {node: round(float(gap) / interval) - 1 for node, gap in gaps}
    assert max(missed.values()) <= 1, gaps
    assert max(float(g) for _, g in gaps) < 2 * interval + 1, gaps
