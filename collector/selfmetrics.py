"""The collector's own /metrics: its counters, and the fleet snapshot as gauges.

Each app has its own ``CollectorRegistry`` (never prometheus_client's global
one, so two apps in one process, as in the tests, do not share counters); the
writer and the scraper register their metrics on the same registry.

The fleet gauges are not computed here: they are the headline numbers of the
tick's stored fleet snapshot (``fleetscope.snapshot.stored_snapshot``), the
very row the dashboard, its JSON API and the CLI show (DESIGN.md, "The fleet
snapshot"), with its as-of time and hash in ``fleetscope_fleet_snapshot_info``.
The maintenance loop stores each tick as it settles; a tick not stored yet is
computed and stored by whoever asks first. It is read at most once per tick
(the cache is keyed by ``default_as_of()``), in a worker thread on its own
connection, so that a /metrics scrape never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from fleetscope.errors import FleetscopeError
from fleetscope.snapshot import GPU_FIELDS, Snapshot, default_as_of, stored_snapshot_from_dsn

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime

log = logging.getLogger(__name__)

# Request latency buckets: a push is ~1 ms of parsing plus the queue; a
# registration or job upsert one round trip; anything past 5 s has gone wrong.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
NODE_STATES = ("registered", "online", "offline")
WINDOWS = ("last_24h", "total")
# fleet_snapshot runs a few aggregate queries; on a broken database it must
# not hang /metrics.
SNAPSHOT_CONNECT_TIMEOUT_S = 5


class SelfMetrics:
    """The collector's registry and the metrics every part of it counts."""

    def __init__(self, *, collector_id: str, shard: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.pushes = Counter("fleetscope_collector_pushes", "Push requests by result (accepted, rejected, error).",
                              ["result"], registry=self.registry)
        self.rejects = Counter(
            "fleetscope_collector_rejects",
            "Refused requests (4xx) and values refused by the parser, by reason.",
            ["reason"], registry=self.registry)
        self.requests = Histogram("fleetscope_collector_request_duration_seconds",
                                  "HTTP request latency by route and status.", ["route", "status"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.parse_paths = Counter("fleetscope_collector_push_parses",
                                   "Accepted push payloads by parser path (warm, cold, reference).",
                                   ["path"], registry=self.registry)
        self.remote_writes = Counter("fleetscope_collector_remote_writes",
                                     "POST /api/v1/write requests by result (accepted, rejected, error).",
                                     ["result"], registry=self.registry)
        self.remote_write_samples = Counter(
            "fleetscope_collector_remote_write_samples",
            "Samples of accepted remote_write requests by outcome (written, superseded, stale, too_often, "
            "refused, stale_marker); docs/prometheus.md.", ["outcome"], registry=self.registry)
        self.snapshot_errors = Counter("fleetscope_collector_snapshot_errors",
                                       "Failed fleet snapshot computations for /metrics.", registry=self.registry)
        info = Gauge("fleetscope_collector_info", "This collector replica.", ["collector_id", "shard"],
                     registry=self.registry)
        info.labels(collector_id, shard).set(1)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejects.labels(reason).inc(count)


class FleetSnapshotGauges:
    """A prometheus_client collector yielding the latest fleet snapshot's numbers.

    ``refresh()`` (awaited by the /metrics handler) computes the snapshot for
    the current tick if it has not been; ``collect()`` only reads.
    """

    def __init__(self, dsn: str, *, on_error: Callable[[], None] | None = None,
                 as_of: Callable[[], datetime] = default_as_of) -> None:
        self._dsn = dsn
        self._on_error = on_error
        self._as_of = as_of
        self._lock = asyncio.Lock()
        self.snapshot: Snapshot | None = None
        self._tick: datetime | None = None

    async def refresh(self) -> Snapshot | None:
        """The snapshot of the current tick, computed now if need be; the last one if that fails."""
        tick = self._as_of()
        if self._tick == tick:
            return self.snapshot
        async with self._lock:
            if self._tick != tick:  # another scrape may have computed it while we waited
                try:
                    self.snapshot = await asyncio.to_thread(self._compute, tick)
                    self._tick = tick
                except (psycopg.Error, OSError, FleetscopeError) as exc:
                    log.warning("fleet snapshot for /metrics failed: %s", exc)
                    if self._on_error is not None:
                        self._on_error()
        return self.snapshot

    def _compute(self, tick: datetime) -> Snapshot:
        return stored_snapshot_from_dsn(self._dsn, as_of=tick, connect_timeout=SNAPSHOT_CONNECT_TIMEOUT_S)

    def describe(self) -> list:
        return []  # families depend on the data; nothing to pre-check

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot
        if snap is None:
            return
        body = snap.body
        nodes = GaugeMetricFamily("fleetscope_fleet_nodes", "Nodes by state in the fleet snapshot.",
                                  labels=["state"])
        for state in NODE_STATES:
            nodes.add_metric([state], body["nodes"][state])
        yield nodes
        gpus = GaugeMetricFamily("fleetscope_fleet_gpus", "GPUs (distinct UUIDs) by state in the fleet snapshot.",
                                 labels=["state"])
        for state in GPU_FIELDS:
            gpus.add_metric([state], body["gpus"][state])
        yield gpus
        hours = GaugeMetricFamily("fleetscope_fleet_gpu_hours", "Hired GPU-hours in the window (snapshot).",
                                  labels=["window"])
        revenue = GaugeMetricFamily("fleetscope_fleet_revenue_usd", "Accrued revenue in USD in the window (snapshot).",
                                    labels=["window"])
        for window in WINDOWS:
            hours.add_metric([window], body["gpu_hours"][window])
            revenue.add_metric([window], body["revenue_usd"][window])
        yield hours
        yield revenue
        checks = GaugeMetricFamily("fleetscope_fleet_check_ok", "1 if the snapshot's consistency check passed.",
                                   labels=["check"])
        for check in body["checks"]:
            checks.add_metric([check["name"]], 1 if check["ok"] else 0)
        yield checks
        findings = GaugeMetricFamily("fleetscope_fleet_open_findings", "Open integrity findings (snapshot).")
        findings.add_metric([], body["integrity"]["open_findings"])
        yield findings
        info = GaugeMetricFamily("fleetscope_fleet_snapshot_info", "The snapshot these gauges come from.",
                                 labels=["sha256", "as_of"])
        info.add_metric([snap.sha256, body["as_of"]], 1)
        yield info
