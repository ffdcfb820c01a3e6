"""Batches as the collector makes them, from recorded payloads."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from collector.ingest import Batch
from collector.parse import PayloadParser
from fleetscope.uptime import slot_of

PAYLOADS = Path(__file__).parent / "fixtures" / "payloads"
DCGM_A100X8 = PAYLOADS / "dcgm_exporter_12fields_a100x8.prom"


def ok_batch(node_id: int, received_at: datetime | None = None, *, payload: Path = DCGM_A100X8,
             interval_s: int = 15, source: str = "push") -> Batch:
    received_at = received_at or datetime.now(timezone.utc)
    parsed = PayloadParser().parse(payload.read_bytes())
    return Batch(node_id=node_id, received_at=received_at, slot=slot_of(received_at, interval_s), source=source,
                 ok=True, latency_ms=None if source == "push" else 4.0, payload=parsed)


def failed_batch(node_id: int, received_at: datetime, *, error: str = "timeout", interval_s: int = 15) -> Batch:
    return Batch(node_id=node_id, received_at=received_at, slot=slot_of(received_at, interval_s), source="scrape",
                 ok=False, latency_ms=10_000.0, error=error)
