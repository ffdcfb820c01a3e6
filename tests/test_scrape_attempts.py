"""Scraping a simulated fleet for real: one observation per attempt, once per interval, within limits.

Nodes are registered with a 5 s interval and the scraper runs at
time_scale=0.1, so every interval lasts 0.5 s (timeout 0.4 s).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict

import psycopg
from aiohttp import web
from prometheus_client import CollectorRegistry

from collector.ingest import MemoryAppendable
from collector.scrape import Scraper
from exporters.simfleet import SimServer, register_fleet
from exporters.sim import HostSpec, SimFleet
from fleetscope.registry import create_operator, register_node

INTERVAL_S = 5
SCALE = 0.1
PERIOD = INTERVAL_S * SCALE


def _scraper(dsn: str, memory: MemoryAppendable, **options) -> Scraper:
    return Scraper(dsn, memory, collector_id="test", registry=CollectorRegistry(), time_scale=SCALE,
                   refresh_s=3600, **options)


def _by_node(memory: MemoryAppendable) -> dict[int, list]:
    out = defaultdict(list)
    for batch in memory.committed:
        out[batch.node_id].append(batch)
    return out


def _periods(batches, offset: float) -> list[int]:
    """The schedule period (k in offset + k * PERIOD) in which each attempt started."""
    return [math.floor((b.received_at.timestamp() - b.latency_ms / 1000 - offset) / PERIOD) for b in batches]


def _result(scraper: Scraper, result: str) -> float:
    return scraper.registry.get_sample_value("fleetscope_collector_scrapes_total", {"result": result})


async def test_every_target_is_scraped_once_per_interval_at_its_offset(dsn):
    fleet = SimFleet(3, [HostSpec(f"h{i}", n_gpus=1 + i % 8, hired=i % 2 == 0) for i in range(12)])
    async with SimServer(fleet) as server:
        with psycopg.connect(dsn, autocommit=True) as conn:
            ids = register_fleet(conn, fleet, server.base_url, "ops", interval_s=INTERVAL_S)
        memory = MemoryAppendable()
        async with _scraper(dsn, memory) as scraper:
            offsets = {node: t.offset for node, t in scraper.targets.items()}
            await asyncio.sleep(6 * PERIOD)
    by_node = _by_node(memory)
    assert set(by_node) == set(ids)
    for i, node in enumerate(ids):
        batches = by_node[node]
        ks = _periods(batches, offsets[node])
        assert ks == list(range(ks[0], ks[0] + len(ks))), f"host {i}: one scrape per period, none skipped"
        assert len(batches) in (5, 6, 7)
        for b in batches:
            assert b.ok and b.error is None and b.source == "scrape"
            assert b.slot == math.floor(b.received_at.timestamp() / INTERVAL_S)
            assert b.received_at.tzinfo is not None and b.latency_ms > 0
            assert len(b.payload.samples) == fleet.hosts[i].n_gpus
    assert len(set(offsets.values())) == len(ids)  # spread, not all at once
    assert _result(scraper, "ok") == len(memory.committed)


async def test_a_down_host_gives_one_failed_observation_per_attempt(dsn):
    fleet = SimFleet(3, [HostSpec("up"), HostSpec("flappy", profile="flapping", n_gpus=2)])
    down_at = next(t for t in range(0, 10**6, 300) if not fleet.is_up(1, t))
    for mode, error, result in (("503", "http 503", "http"), ("close", "server disconnected", "error")):
        async with SimServer(fleet, down=mode, clock=lambda: down_at) as server:
            with psycopg.connect(dsn, autocommit=True) as conn:
                up, down = register_fleet(conn, fleet, server.base_url, "ops", interval_s=INTERVAL_S)
            memory = MemoryAppendable()
            async with _scraper(dsn, memory) as scraper:
                offset = scraper.targets[down].offset
                await asyncio.sleep(3 * PERIOD)
        by_node = _by_node(memory)
        assert all(b.ok for b in by_node[up])
        failed = by_node[down]
        assert failed and all(not b.ok and b.error == error and b.payload is None for b in failed), mode
        ks = _periods(failed, offset)
        assert len(ks) == len(set(ks)), "exactly one observation per attempt"
        assert _result(scraper, result) == len(failed)


async def test_a_slow_host_times_out_once_per_attempt(dsn):
    fleet = SimFleet(3, [HostSpec("quick"), HostSpec("slow")])
    async with SimServer(fleet, delay_s=lambda i: 2.0 if i == 1 else 0.0) as server:
        with psycopg.connect(dsn, autocommit=True) as conn:
            quick, slow = register_fleet(conn, fleet, server.base_url, "ops", interval_s=INTERVAL_S)
        memory = MemoryAppendable()
        async with _scraper(dsn, memory) as scraper:
            offset = scraper.targets[slow].offset
            await asyncio.sleep(5 * PERIOD)
    by_node = _by_node(memory)
    assert all(b.ok for b in by_node[quick])
    timed_out = by_node[slow]
    assert len(timed_out) >= 3
    for b in timed_out:
        assert not b.ok and b.error == "timeout" and b.payload is None
        assert 0.8 * PERIOD * 1000 * 0.95 < b.latency_ms < PERIOD * 1000  # the timeout is 80 % of the interval
    ks = _periods(timed_out, offset)
    assert len(ks) == len(set(ks))
    assert _result(scraper, "timeout") == len(timed_out)


async def test_refused_connections_and_unparsable_bodies_are_failed_observations(dsn):
    fleet = SimFleet(3, [HostSpec("a")])
    async with SimServer(fleet) as server:
        with psycopg.connect(dsn, autocommit=True) as conn:
            operator_id, _ = create_operator(conn, "ops")
            refused = register_node(conn, operator_id=operator_id, name="gone", interval_s=INTERVAL_S,
                                    scrape_url="http://127.0.0.1:9/metrics").node_id
            garbage = register_node(conn, operator_id=operator_id, name="garbage", interval_s=INTERVAL_S,
                                    scrape_url=server.base_url + "/").node_id
            missing = register_node(conn, operator_id=operator_id, name="missing", interval_s=INTERVAL_S,
                                    scrape_url=server.base_url + "/metrics/999").node_id
        memory = MemoryAppendable()
        async with _scraper(dsn, memory) as scraper:
            await asyncio.sleep(3 * PERIOD)
    by_node = _by_node(memory)
    assert by_node[refused] and all(b.error == "connection refused" for b in by_node[refused])
    assert by_node[garbage] and all(b.error.startswith("unparsable: ") for b in by_node[garbage])
    assert by_node[missing] and all(b.error == "http 404" for b in by_node[missing])
    assert not any(b.ok for b in memory.committed)
    assert _result(scraper, "unparsable") == len(by_node[garbage])


async def test_a_target_removed_from_the_database_stops_being_scraped(dsn):
    fleet = SimFleet(3, [HostSpec(f"h{i}", n_gpus=1) for i in range(4)])
    async with SimServer(fleet) as server:
        with psycopg.connect(dsn, autocommit=True) as conn:
            ids = register_fleet(conn, fleet, server.base_url, "ops", interval_s=INTERVAL_S)
        memory = MemoryAppendable()
        async with _scraper(dsn, memory) as scraper:
            await asyncio.sleep(2 * PERIOD)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM nodes WHERE node_id = %s", (ids[0],))
            await scraper.refresh()
            removed_at = time.time()
            await asyncio.sleep(3 * PERIOD)
    late = [b for b in _by_node(memory)[ids[0]] if b.received_at.timestamp() > removed_at + PERIOD]
    assert late == []
    assert all(len(_by_node(memory)[node]) >= 4 for node in ids[1:])


async def test_the_concurrency_limit_holds_and_overflowing_slots_are_skipped_not_caught_up(dsn):
    """8 targets each taking 0.15 s every 0.5 s need 2.4 scrapes in flight; the limit is 2."""
    fleet = SimFleet(3, [HostSpec(f"h{i}", n_gpus=1) for i in range(8)])
    in_flight = 0
    peak = 0

    async def slow_metrics(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.15)
            return web.Response(body=fleet.render(int(request.match_info["i"]), time.time()),
                                content_type="text/plain")
        finally:
            in_flight -= 1

    app = web.Application()
    app.router.add_get("/metrics/{i}", slow_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            ids = register_fleet(conn, fleet, base, "ops", interval_s=INTERVAL_S)
        memory = MemoryAppendable()
        async with _scraper(dsn, memory, concurrency=2) as scraper:
            offsets = {node: t.offset for node, t in scraper.targets.items()}
            await asyncio.sleep(6 * PERIOD)
            missed = scraper.registry.get_sample_value("fleetscope_collector_scrape_slots_missed_total")
    finally:
        await runner.cleanup()
    assert peak == 2
    assert missed > 0
    attempts = len(memory.committed)
    assert attempts <= 6 * PERIOD * 2 / 0.15 + 2  # two slots busy all the time at most
    for node in ids:
        ks = _periods(_by_node(memory)[node], offsets[node])
        # Never a catch-up burst: at most one scrape per interval that passed
        # (plus the one in flight). Counted by receive time, a scrape started
        # late in its interval may answer in the next, so two answers can share
        # an interval; what cannot happen is more answers than intervals.
        assert len(ks) <= max(ks) - min(ks) + 2, ks


async def test_a_stalled_loop_skips_the_missed_slots_instead_of_bursting(dsn):
    fleet = SimFleet(3, [HostSpec(f"h{i}", n_gpus=1) for i in range(6)])
    async with SimServer(fleet) as server:
        with psycopg.connect(dsn, autocommit=True) as conn:
            ids = register_fleet(conn, fleet, server.base_url, "ops", interval_s=INTERVAL_S)
        memory = MemoryAppendable()
        async with _scraper(dsn, memory) as scraper:
            offsets = {node: t.offset for node, t in scraper.targets.items()}
            await asyncio.sleep(2 * PERIOD)
            time.sleep(3.2 * PERIOD)  # the whole event loop stalls for over three intervals
            await asyncio.sleep(3 * PERIOD)
            missed = scraper.registry.get_sample_value("fleetscope_collector_scrape_slots_missed_total")
    assert missed >= 3 * len(ids)
    for node in ids:
        ks = _periods(_by_node(memory)[node], offsets[node])
        assert len(ks) == len(set(ks)), "no catch-up burst after the stall"
