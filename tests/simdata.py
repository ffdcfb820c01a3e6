"""Simulated fleets written to a real database the way the collector writes them.

Each host's /metrics text (``SimFleet.render``) is parsed by the collector's
parser and committed, as one push per interval, through the real writer: the
identities, GPU sets, samples and observations in the database are exactly
what a running collector would have stored.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from collector.ingest import Batch
from collector.parse import PayloadParser
from exporters.simfleet import register_fleet
from collector.writer import Writer
from exporters.sim import SimFleet
from fleetscope.uptime import slot_of

INTERVAL_S = 15


async def ingest(dsn: str, fleet: SimFleet, *, spool_dir, samples: int = 25,
                 start: datetime | None = None) -> tuple[list[int], datetime]:
    """Register ``fleet``'s hosts and push ``samples`` intervals of each; returns (node ids, time of the last push)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        nodes = register_fleet(conn, fleet, None, "sim", interval_s=INTERVAL_S)
    start = start or datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    parsers = [PayloadParser() for _ in nodes]
    last = start
    async with Writer(dsn, spool_dir=spool_dir, collector_id="sim-test", mode="plain") as writer:
        for k in range(samples):
            t = start + timedelta(seconds=INTERVAL_S * k)
            appender = writer.appender()
            for i, node_id in enumerate(nodes):
                if not fleet.is_up(i, t.timestamp()):
                    continue
                parsed = parsers[i].parse(fleet.render(i, t.timestamp()))
                appender.append(Batch(node_id=node_id, received_at=t, slot=slot_of(t, INTERVAL_S),
                                      source="push", ok=True, payload=parsed))
            await appender.commit()
            last = t
    return nodes, last
