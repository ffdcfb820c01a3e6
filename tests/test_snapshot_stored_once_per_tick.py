"""Each tick's fleet snapshot is computed once, stored, and every reader shows the stored one."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from collector.maintenance import Maintenance
from fleetscope.snapshot import (GPU_FIELDS, SNAPSHOT_TICK_S, default_as_of, fleet_snapshot, stored_snapshot,
                                 stored_snapshot_from_dsn)
from fleetscope.times import parse_time
from tests.dashboard_harness import get


def stored_rows(dsn: str, as_of: datetime) -> list[tuple[str, int]]:
    """(sha256, computations) of every stored row of the tick."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT sha256, computations FROM fleet_snapshots WHERE as_of = %s",
                            (as_of,)).fetchall()


async def metrics_snapshot(client) -> dict:
    """The collector's /metrics fleet gauges as a dict shaped like the snapshot."""
    response = await client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}

    def by(name: str, label: str) -> dict:
        return {s.labels[label]: s.value for s in families[name].samples}

    [info] = families["fleetscope_fleet_snapshot_info"].samples
    return {"as_of": info.labels["as_of"], "snapshot_sha256": info.labels["sha256"],
            "nodes": by("fleetscope_fleet_nodes", "state"), "gpus": by("fleetscope_fleet_gpus", "state"),
            "gpu_hours": by("fleetscope_fleet_gpu_hours", "window"),
            "revenue_usd": by("fleetscope_fleet_revenue_usd", "window"),
            "checks": by("fleetscope_fleet_check_ok", "check")}


async def test_the_collectors_metrics_and_the_dashboards_api_show_one_computation_of_the_tick(
        client, explorer_url, dsn):
    for _ in range(3):  # a tick may turn between the two requests: ask again
        metrics = await metrics_snapshot(client)
        _, fleet, _ = await asyncio.to_thread(get, f"{explorer_url}/api/v1/fleet")
        if metrics["as_of"] == fleet["as_of"]:
            break
    assert metrics["as_of"] == fleet["as_of"]
    assert metrics["snapshot_sha256"] == fleet["snapshot_sha256"]
    assert metrics["nodes"] == fleet["nodes"] and metrics["gpus"] == {k: fleet["gpus"][k] for k in GPU_FIELDS}
    assert metrics["gpu_hours"] == fleet["gpu_hours"] and metrics["revenue_usd"] == fleet["revenue_usd"]
    assert metrics["checks"] == {c["name"]: int(c["ok"]) for c in fleet["checks"]}
    assert fleet["nodes"]["registered"] == 6  # the live fleet: the equal numbers mean something

    # Asked again by both, the tick stays one row computed once.
    await metrics_snapshot(client)
    await asyncio.to_thread(get, f"{explorer_url}/api/v1/fleet")
    assert stored_rows(dsn, parse_time(fleet["as_of"])) == [(fleet["snapshot_sha256"], 1)]


def test_readers_missing_the_same_tick_at_once_compute_it_once_and_show_the_same_bytes(dsn, live_fleet):
    tick = default_as_of() - timedelta(seconds=4 * SNAPSHOT_TICK_S)
    with ThreadPoolExecutor(max_workers=6) as pool:
        snaps = list(pool.map(lambda _: stored_snapshot_from_dsn(dsn, as_of=tick), range(6)))
    assert len({s.canonical for s in snaps}) == 1
    assert stored_rows(dsn, tick) == [(snaps[0].sha256, 1)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert fleet_snapshot(conn, as_of=tick).sha256 == snaps[0].sha256  # the stored one is the definition's


def test_the_stored_tick_stands_when_the_fleet_changes_after_it(dsn, live_fleet):
    tick = default_as_of() - timedelta(seconds=2 * SNAPSHOT_TICK_S)
    first = stored_snapshot_from_dsn(dsn, as_of=tick)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A job the marketplace posts late, started before the tick, changes what a fresh computation says...
        node = conn.execute("SELECT min(node_id) FROM nodes").fetchone()[0]
        conn.execute("INSERT INTO jobs (job_id, node_id, gpu_count, price_per_gpu_hour, started_at, status)"
                     " VALUES ('late-job', %s, 1, 9.5, %s, 'running')", (node, tick - timedelta(hours=3)))
        assert fleet_snapshot(conn, as_of=tick).sha256 != first.sha256
        # ...but every reader keeps showing the tick as it was stored.
        assert stored_snapshot(conn, as_of=tick).canonical == first.canonical
    assert stored_rows(dsn, tick) == [(first.sha256, 1)]


def test_a_tick_not_settled_yet_is_computed_but_never_stored(dsn, live_fleet):
    now = datetime.now(timezone.utc)
    with psycopg.connect(dsn, autocommit=True) as conn:
        snap = stored_snapshot(conn, as_of=now - timedelta(seconds=1), now=now)
    assert snap.body["nodes"]["registered"] == 6
    assert stored_rows(dsn, now - timedelta(seconds=1)) == []


async def test_the_maintenance_loop_stores_the_tick_before_anyone_asks(dsn, live_fleet):
    async with Maintenance(dsn, interval_s=3600):
        for _ in range(100):
            tick = default_as_of()
            rows = stored_rows(dsn, tick)
            if rows:
                break
            await asyncio.sleep(0.1)
    assert rows and rows[0][1] == 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert fleet_snapshot(conn, as_of=tick).sha256 == rows[0][0]
