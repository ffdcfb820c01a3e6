"""A push or a scrape is an "up" observation only when it proves a live GPU host (issue 15, item 5).

DESIGN.md, "Trust boundaries": the exporter's health metric (or a known
exporter's GPU telemetry) and at least one GPU identity. An empty body, a
comments-only body, or any other Prometheus endpoint (the collector's own
/metrics) proves nothing: 400 for a push, a failed observation for a scrape.
"""

from __future__ import annotations

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from collector.ingest import MemoryAppendable
from collector.scrape import Scraper
from exporters.simfleet import SimServer
from exporters.sim import HostSpec, SimFleet
from fleetscope.registry import create_operator, register_node
from tests.collector_harness import PAYLOADS, push, register, rejects

HEALTH_ONLY = b"# HELP fleet_exporter_last_collect_success 1 if the last collection worked.\n" \
              b"# TYPE fleet_exporter_last_collect_success gauge\nfleet_exporter_last_collect_success 1.0\n"
# A GPU named by a series no exporter serves, and no health metric.
UNKNOWN_SERIES = b'some_app_requests_total{UUID="GPU-86e0fbc8-6b44-0e94-f849-dfeb083826c6"} 3\n'


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "no_gpu"),
    (b"# HELP nothing here\n# just comments\n", "no_gpu"),
    (HEALTH_ONLY, "no_gpu"),
    (UNKNOWN_SERIES, "no_health_metric"),
])
async def test_a_push_without_health_and_a_gpu_is_refused_and_not_counted_as_up(client, storage, operator_token,
                                                                               body, reason):
    _, token = await register(client, operator_token)
    response = await push(client, token, body)
    assert response.status == 400
    answer = await response.json()
    assert answer["reason"] == reason and answer["error"]
    assert storage.committed == []  # no observation, so no "up" slot
    assert await rejects(client, reason) == 1


@pytest.mark.parametrize("fixture", sorted(p.name for p in PAYLOADS.iterdir() if p.suffix in (".prom", ".openmetrics")))
async def test_every_recorded_exporter_payload_is_accepted_as_liveness(client, storage, operator_token, fixture):
    _, token = await register(client, operator_token)
    content_type = ("application/openmetrics-text; version=1.0.0" if fixture.endswith(".openmetrics")
                    else "text/plain; version=0.0.4")
    response = await push(client, token, (PAYLOADS / fixture).read_bytes(), content_type=content_type)
    assert response.status == 204, await response.text()
    assert len(storage.committed) == 1 and storage.committed[0].ok


async def test_a_scrape_of_the_collectors_own_metrics_is_a_failed_observation(client, dsn):
    """Any Prometheus endpoint is not a GPU host: scraping the collector's /metrics is no "up"."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "ops")
        node = register_node(conn, operator_id=operator_id, name="not-a-gpu",
                             scrape_url=str(client.make_url("/metrics"))).node_id
    memory = MemoryAppendable()
    async with Scraper(dsn, memory, registry=CollectorRegistry(), refresh_s=3600) as scraper:
        batch = await scraper.attempt(scraper.targets[node])
    assert not batch.ok and batch.payload is None
    assert batch.error == "refused: no_gpu"


async def test_a_scrape_of_a_real_exporter_is_still_an_ok_observation(dsn):
    fleet = SimFleet(3, [HostSpec("h0", n_gpus=2)])
    async with SimServer(fleet) as server:
        with psycopg.connect(dsn, autocommit=True) as conn:
            operator_id, _ = create_operator(conn, "ops")
            node = register_node(conn, operator_id=operator_id, name="h0", scrape_url=server.url(0)).node_id
        async with Scraper(dsn, MemoryAppendable(), registry=CollectorRegistry(), refresh_s=3600) as scraper:
            batch = await scraper.attempt(scraper.targets[node])
    assert batch.ok and batch.error is None and len(batch.payload.samples) == 2
