"""The simulator serves each host's exporter output, lists the hosts for Prometheus, and registers them."""

from __future__ import annotations

import gzip
import json

import aiohttp
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from exporters.simfleet import (
    DEMO_SCENARIO,
    BodyRing,
    SimServer,
    file_sd,
    load_fleet,
    register_fleet,
    write_targets,
)
from exporters.sim import SimFleet

T = 1_763_950_000.0  # a fixed simulated time


async def test_each_served_body_is_the_hosts_render_and_parses_as_prometheus_text():
    fleet = load_fleet(5)
    assert len(fleet) == sum(g["count"] for g in DEMO_SCENARIO)
    async with SimServer(fleet, clock=lambda: T) as server, aiohttp.ClientSession() as session:
        for i in range(0, len(fleet), 7):
            if not fleet.is_up(i, T):
                continue
            for key in (str(i), fleet.hostname(i)):
                async with session.get(f"{server.base_url}/metrics/{key}") as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    body = await resp.read()
                assert body == fleet.render(i, T)
                names = {f.name for f in text_string_to_metric_families(body.decode())}
                assert "DCGM_FI_DEV_GPU_UTIL" in names and "fleet_gpu_info" in names


async def test_bodies_are_gzipped_when_asked_and_plain_otherwise():
    fleet = load_fleet(5)
    async with SimServer(fleet, clock=lambda: T) as server:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(server.url(0), headers={"Accept-Encoding": "gzip"}) as resp:
                assert resp.headers["Content-Encoding"] == "gzip"
                assert gzip.decompress(await resp.read()) == fleet.render(0, T)
            async with session.get(server.url(0), headers={"Accept-Encoding": "identity"}) as resp:
                assert "Content-Encoding" not in resp.headers
                assert await resp.read() == fleet.render(0, T)
            async with session.get(f"{server.base_url}/metrics/nope") as resp:
                assert resp.status == 404


async def test_a_down_host_answers_503():
    fleet = SimFleet.from_scenario(5, [{"profile": "flapping", "count": 1}])
    down_at = next(t for t in range(0, 10**6, 300) if not fleet.is_up(0, t))
    async with SimServer(fleet, clock=lambda: down_at) as server, aiohttp.ClientSession() as session:
        async with session.get(server.url(0)) as resp:
            assert resp.status == 503


async def test_a_body_ring_serves_pre_rendered_bodies_in_turn():
    fleet = SimFleet.from_scenario(5, [{"profile": "healthy", "count": 2}])
    ring = BodyRing(fleet, ring=2, interval_s=15, t0=T)
    assert gzip.decompress(ring.get(1, 15 * 1000)) == fleet.render(1, T)
    assert gzip.decompress(ring.get(1, 15 * 1001)) == fleet.render(1, T + 15)
    async with SimServer(fleet, clock=lambda: 15 * 1001, ring=ring) as server, aiohttp.ClientSession() as session:
        async with session.get(server.url(1)) as resp:
            assert await resp.read() == fleet.render(1, T + 15)


def test_targets_json_is_prometheus_file_sd_with_one_metrics_path_per_host(open_tmp):
    fleet = load_fleet(5)
    path = write_targets(open_tmp / "targets.json", fleet, "127.0.0.1:9400")
    groups = json.loads(path.read_text())
    assert groups == file_sd(fleet, "127.0.0.1:9400")
    assert len(groups) == len(fleet)
    paths = set()
    for i, group in enumerate(groups):
        # file_sd: a list of {"targets": [host:port, ...], "labels": {str: str}}
        assert set(group) == {"targets", "labels"}
        assert group["targets"] == ["127.0.0.1:9400"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in group["labels"].items())
        assert group["labels"]["__metrics_path__"] == f"/metrics/{i}"
        assert group["labels"]["host_id"] == fleet.hostname(i)
        paths.add(group["labels"]["__metrics_path__"])
    assert len(paths) == len(fleet)


def test_register_fleet_creates_a_node_per_host_with_its_scrape_url(dsn):
    fleet = SimFleet.from_scenario(5, [{"profile": "healthy", "count": 3}, {"profile": "flapping", "count": 2}])
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = register_fleet(conn, fleet, "http://127.0.0.1:9400", "sim-ops", interval_s=15)
        rows = conn.execute(
            "SELECT n.node_id, n.name, n.scrape_url, n.interval_s, o.name FROM nodes n"
            " JOIN operators o USING (operator_id) ORDER BY n.node_id").fetchall()
        assert [r[0] for r in rows] == ids
        assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
            (fleet.hostname(i), f"http://127.0.0.1:9400/metrics/{i}", 15, "sim-ops") for i in range(5)]
        # Again, on another port: the same nodes, their URLs moved.
        assert register_fleet(conn, fleet, "http://127.0.0.1:9401/", "sim-ops", interval_s=15) == ids
        urls = [r[0] for r in conn.execute("SELECT scrape_url FROM nodes ORDER BY node_id")]
        assert urls == [f"http://127.0.0.1:9401/metrics/{i}" for i in range(5)]
