"""Which targets a scraper scrapes: its shard of the database's nodes, refreshed, kept through an outage."""

from __future__ import annotations

import asyncio

import psycopg
from prometheus_client import CollectorRegistry

from collector.ingest import MemoryAppendable
from collector.schedule import shard_of
from collector.scrape import Scraper
from exporters.simfleet import register_fleet
from exporters.sim import HostSpec, SimFleet

BASE = "http://127.0.0.1:9"  # nothing is scraped in these tests: refresh_s and intervals are long


def _fleet(n: int) -> SimFleet:
    return SimFleet(7, [HostSpec(f"h{i:03d}", n_gpus=1) for i in range(n)])


def _scraper(dsn: str, shard: tuple[int, int] = (0, 1)) -> Scraper:
    return Scraper(dsn, MemoryAppendable(), shard=shard, collector_id=f"t{shard[0]}",
                   registry=CollectorRegistry(), refresh_s=3600)


async def test_the_scraper_loads_every_node_with_a_scrape_url_that_is_not_paused(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = register_fleet(conn, _fleet(6), BASE, "ops", interval_s=60)
        conn.execute("UPDATE nodes SET paused = true WHERE node_id = %s", (ids[0],))
        conn.execute("UPDATE nodes SET scrape_url = NULL WHERE node_id = %s", (ids[1],))
    async with _scraper(dsn) as scraper:
        assert set(scraper.targets) == set(ids[2:])
        assert scraper.targets[ids[2]].url == f"{BASE}/metrics/2"
        assert scraper.targets[ids[2]].interval_s == 60
        assert scraper.registry.get_sample_value("fleetscope_collector_scrape_targets") == 4


async def test_replicas_split_the_targets_disjointly_and_completely(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = register_fleet(conn, _fleet(40), BASE, "ops", interval_s=60)
    async with _scraper(dsn, (0, 3)) as a, _scraper(dsn, (1, 3)) as b, _scraper(dsn, (2, 3)) as c:
        shards = [set(s.targets) for s in (a, b, c)]
    assert sum(map(len, shards)) == len(ids)
    assert set().union(*shards) == set(ids)
    assert all(shards)
    for i, shard in enumerate(shards):
        assert all(shard_of(node, 3) == i for node in shard)


async def test_a_refresh_picks_up_new_nodes_and_drops_removed_ones(dsn):
    fleet = _fleet(5)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = register_fleet(conn, SimFleet(7, fleet.hosts[:3]), BASE, "ops", interval_s=60)
    async with _scraper(dsn) as scraper:
        assert set(scraper.targets) == set(ids)
        old_cache = scraper.targets[ids[1]].cache
        with psycopg.connect(dsn, autocommit=True) as conn:
            ids = register_fleet(conn, fleet, BASE, "ops", interval_s=60)
            conn.execute("DELETE FROM nodes WHERE node_id = %s", (ids[0],))
            conn.execute("UPDATE nodes SET interval_s = 30 WHERE node_id = %s", (ids[1],))
        assert await scraper.refresh() == 4
        assert set(scraper.targets) == set(ids[1:])
        assert scraper.targets[ids[1]].interval_s == 30
        assert scraper.targets[ids[1]].cache is old_cache  # same URL: the parse cache is kept


async def test_a_database_outage_keeps_the_last_target_list(dsn, pg_server):
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = register_fleet(conn, _fleet(3), BASE, "ops", interval_s=60)
        dbname = conn.info.dbname
    async with _scraper(dsn) as scraper:
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        try:
            scraper.refresh_s = 0.05
            await asyncio.sleep(0.5)  # several failed refreshes
            assert scraper.registry.get_sample_value("fleetscope_collector_scrape_refresh_errors_total") >= 1
            assert set(scraper.targets) == set(ids)
        finally:
            with psycopg.connect(pg_server.admin_dsn, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM nodes WHERE node_id = %s", (ids[2],))
        for _ in range(100):  # the next refresh after the outage sees the change
            if set(scraper.targets) == set(ids[:2]):
                break
            await asyncio.sleep(0.05)
        assert set(scraper.targets) == set(ids[:2])
