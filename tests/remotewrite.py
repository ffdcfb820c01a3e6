"""Helpers for the remote_write tests: Prometheus text as the series a Prometheus server would send.

Holds no tests. ``series_of`` reads a recorded exporter payload with
prometheus_client's parser (the reference) and labels every series with the
node, as the relabelling in docs/prometheus.md does; ``collector.prompb.encode``
makes the snappy-compressed WriteRequest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from collector.remote_write import NODE_LABEL
from tests.collector_harness import bearer

if TYPE_CHECKING:
    from aiohttp.test_utils import TestClient

HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def now_ms() -> int:
    return int(time.time() * 1000)


def series_of(text: str | bytes, node_id: int | None, t_ms: int | None = None, *,
              up: float | None = 1.0, instance: str = "host:9400") -> list[tuple[dict[str, str], list]]:
    """The samples of one scrape of ``text`` as remote_write series, at ``t_ms`` (now if None)."""
    if isinstance(text, bytes):
        text = text.decode()
    t_ms = now_ms() if t_ms is None else t_ms
    extra = {"job": "gpus", "instance": instance}
    if node_id is not None:
        extra[NODE_LABEL] = str(node_id)
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append(({"__name__": s.name, **s.labels, **extra}, [(t_ms, float(s.value))]))
    if up is not None:  # Prometheus' report of the scrape, after its samples
        count = float(len(out)) if up else 0.0
        for name, value in (("up", up), ("scrape_duration_seconds", 0.01), ("scrape_samples_scraped", count),
                            ("scrape_samples_post_metric_relabeling", count), ("scrape_series_added", 0.0)):
            out.append(({"__name__": name, **extra}, [(t_ms, value)]))
    return out


async def write(client: TestClient, token: str | None, body: bytes, *, headers: dict | None = None):
    sent = {**HEADERS, **(headers or {})}
    if token is not None:
        sent.update(bearer(token))
    return await client.post("/api/v1/write", data=body, headers=sent)
