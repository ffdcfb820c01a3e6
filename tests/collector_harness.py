"""Shared fixtures and helpers for the collector tests: a real collector on real HTTP and a real database.

Its fixtures are registered in tests/conftest.py; the test files import its helpers. (It holds no tests of
its own). The collector runs with aiohttp's test server on 127.0.0.1 and a
``MemoryAppendable`` for storage, so a test sees exactly which batches were
committed; everything else (tokens, nodes, jobs, channels, the snapshot) is
the real thing on the test's own PostgreSQL database.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.app import make_app
from collector.ingest import MemoryAppendable
from collector.settings import CollectorSettings
from fleetscope.registry import create_operator

if TYPE_CHECKING:
    from aiohttp.test_utils import TestClient

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
PAYLOADS = Path(__file__).parent / "fixtures" / "payloads"
FLEET_PROM = (PAYLOADS / "fleet_exporter_rtx4090x8.prom").read_bytes()
FLEET_OPENMETRICS = (PAYLOADS / "fleet_exporter_rtx4090x8.openmetrics").read_bytes()
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def collector_settings(dsn: str, tmp_path: Path, **overrides) -> CollectorSettings:
    # The tests' fleets live on 127.0.0.1 (issue 15: FLEETSCOPE_ALLOW_PRIVATE_TARGETS=1).
    fields = {"port": 0, "admin_token": ADMIN_TOKEN, "spool_dir": tmp_path / "spool",
              "collector_id": "test-collector:0", "allow_private_targets": True, **overrides}
    return CollectorSettings(dsn=dsn, **fields)


@pytest.fixture
def storage() -> MemoryAppendable:
    return MemoryAppendable()


@pytest.fixture
def settings(dsn: str, tmp_path: Path) -> CollectorSettings:
    return collector_settings(dsn, tmp_path)


@pytest.fixture
async def client(aiohttp_client, settings: CollectorSettings, storage: MemoryAppendable):
    test_client = await aiohttp_client(make_app(settings, appendable=storage))
    yield test_client
    # Closed here, before the test's database is dropped (this fixture depends
    # on it): aiohttp_client's own teardown comes after, and a pool still
    # reconnecting to a database being dropped waits out its connect timeout.
    await test_client.close()


@pytest.fixture
def operator_token(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return create_operator(conn, "acme")[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: TestClient, operator_token: str, name: str = "node-1", **fields) -> tuple[int, str]:
    """Register a node through the API; return (node_id, node_token)."""
    body = {"name": name, "scrape_url": None, "interval_s": 15, **fields}
    response = await client.post("/api/v1/nodes", json=body, headers=bearer(operator_token))
    assert response.status == 201, await response.text()
    data = await response.json()
    return data["node_id"], data["node_token"]


async def push(client: TestClient, node_token: str | None, body: bytes = FLEET_PROM, *,
               content_type: str | None = TEXT_TYPE, gzipped: bool = False, headers: dict | None = None):
    sent = dict(headers or {})
    if node_token is not None:
        sent.update(bearer(node_token))
    if content_type is not None:
        sent["Content-Type"] = content_type
    if gzipped:
        body = gzip.compress(body)
        sent["Content-Encoding"] = "gzip"
    return await client.post("/api/v1/push", data=body, headers=sent)


async def scrape_metrics(client: TestClient) -> dict[tuple[str, tuple], float]:
    """The collector's /metrics as {(sample name, sorted labels): value}."""
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(metrics: dict, name: str, **labels) -> float:
    """One sample's value, 0 when absent (a counter never incremented)."""
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def rejects(client: TestClient, reason: str) -> float:
    return sample(await scrape_metrics(client), "fleetscope_collector_rejects_total", reason=reason)
