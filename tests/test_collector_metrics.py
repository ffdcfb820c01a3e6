"""The collector's /metrics: its own counters, and the very same fleet snapshot as the CLI."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from collector.parse import PayloadParser
from collector.selfmetrics import FleetSnapshotGauges
from fleetscope.snapshot import GPU_FIELDS, SNAPSHOT_TICK_S, default_as_of, fleet_snapshot
from tests.fleetdata import Fleet
from tests.collector_harness import push, register, sample, scrape_metrics


def build_fleet(dsn: str) -> None:
    """Three nodes around now: two online (one hired), one down, and a finding."""
    now = datetime.now(timezone.utc)
    with psycopg.connect(dsn, autocommit=True) as conn:
        fleet = Fleet(conn)
        up, hired, down = (fleet.node(registered_at=now - timedelta(days=2)) for _ in range(3))
        fleet.gpus(up, ["GPU-a1", "GPU-a2"], since=now - timedelta(days=2), checked=True,
                   proved_at=now - timedelta(hours=1))
        fleet.gpus(hired, ["GPU-b1", "GPU-b2", "GPU-b3", "GPU-b4"], model="NVIDIA H100 80GB HBM3",
                   since=now - timedelta(days=2))
        fleet.gpus(down, ["GPU-c1"], since=now - timedelta(days=2))
        for node in (up, hired):
            for seconds in range(20, 3600, 15):
                fleet.observe(node, now - timedelta(seconds=seconds))
        fleet.observe(down, now - timedelta(hours=3))
        fleet.job("j-done", hired, gpu_count=4, price="2.5", started_at=now - timedelta(hours=30),
                  ended_at=now - timedelta(hours=20), status="succeeded")
        fleet.job("j-run", hired, gpu_count=2, price="3.1", started_at=now - timedelta(hours=1))
        fleet.finding("virtualized", node_id=down, gpu_uuid="GPU-c1", first_seen=now - timedelta(days=1))


async def test_metrics_show_the_same_snapshot_numbers_and_hash_as_fleet_snapshot(client, dsn):
    build_fleet(dsn)
    response = await client.get("/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}

    [info] = families["fleetscope_fleet_snapshot_info"].samples
    as_of = datetime.fromisoformat(info.labels["as_of"].replace("Z", "+00:00"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        snap = fleet_snapshot(conn, as_of=as_of)
    assert info.labels["sha256"] == snap.sha256
    assert info.labels["as_of"] == snap.body["as_of"]

    def by(name: str, label: str) -> dict:
        return {s.labels[label]: s.value for s in families[name].samples}

    body = snap.body
    assert by("fleetscope_fleet_nodes", "state") == {k: body["nodes"][k] for k in ("registered", "online", "offline")}
    assert by("fleetscope_fleet_gpus", "state") == {k: body["gpus"][k] for k in GPU_FIELDS}
    assert by("fleetscope_fleet_gpu_hours", "window") == body["gpu_hours"]
    assert by("fleetscope_fleet_revenue_usd", "window") == body["revenue_usd"]
    assert by("fleetscope_fleet_check_ok", "check") == {c["name"]: int(c["ok"]) for c in body["checks"]}
    # The scenario is not trivial: the numbers being equal means something.
    assert body["nodes"] == {"registered": 3, "online": 2, "offline": 1}
    assert body["gpus"]["hired"] == 2 and body["gpus"]["flagged"] == 1
    assert body["gpu_hours"]["total"] > 40 and body["revenue_usd"]["last_24h"] > 0


async def test_the_snapshot_is_computed_once_per_tick_however_often_it_is_asked_for(dsn):
    tick = default_as_of()
    computed = []

    class Counting(FleetSnapshotGauges):
        def _compute(self, at):
            computed.append(at)
            return super()._compute(at)

    now = [tick]
    gauges = Counting(dsn, as_of=lambda: now[0])
    first, *rest = await asyncio.gather(*(gauges.refresh() for _ in range(5)))
    build_fleet(dsn)  # the fleet changes within the tick: the tick's snapshot stands
    rest.append(await gauges.refresh())
    assert computed == [tick] and all(r is first for r in rest)

    now[0] = tick + timedelta(seconds=SNAPSHOT_TICK_S)
    later = await gauges.refresh()
    assert computed == [tick, now[0]] and later.sha256 != first.sha256
    assert later.body["nodes"]["registered"] == 3


async def test_values_the_parser_refused_are_counted_by_reason(client, operator_token, storage):
    _, token = await register(client, operator_token)
    hot = b'UUID="GPU-86e0fbc8-6b44-0e94-f849-dfeb083826c6"'
    body = b'DCGM_FI_DEV_GPU_UTIL{gpu="0",%s} 150\nDCGM_FI_DEV_GPU_TEMP{gpu="0",%s} NaN\n' % (hot, hot)
    expected = PayloadParser().parse(body).rejects
    assert expected.get("clamped_util") == 1 and expected.get("nan") == 1
    assert (await push(client, token, body)).status == 204
    metrics = await scrape_metrics(client)
    for reason, count in expected.items():
        assert sample(metrics, "fleetscope_collector_rejects_total", reason=reason) == count
    assert storage.committed[0].payload.rejects == expected


async def test_metrics_count_requests_by_route_and_name_this_collector(client, operator_token):
    await register(client, operator_token)
    await client.get("/healthz")
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_request_duration_seconds_count",
                  route="/api/v1/nodes", status="201") == 1
    assert sample(metrics, "fleetscope_collector_request_duration_seconds_count",
                  route="/healthz", status="200") == 1
    assert sample(metrics, "fleetscope_collector_info", collector_id="test-collector:0", shard="0/1") == 1
