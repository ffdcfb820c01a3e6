"""The collector's maintenance loop: rollups and housekeeping, on a timer.

- Plain-PostgreSQL mode: refresh the hourly rollup (fleetscope/rollups.py) so
  closed hours are materialised; TimescaleDB refreshes its continuous
  aggregate by policy, so there is nothing to do in that mode.
- Prune ``ingest_batches``, the writer's record of written groups, once it is
  older than any group could be replayed (the spool keeps groups while the
  database is away; a week is far beyond that).

Runs in a thread with its own synchronous connection: a rollup refresh is
one long statement and must not hold the event loop. Later issues (integrity
checks, snapshot publication, alerts) add their steps here.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import psycopg

from fleetscope import rollups
from fleetscope.migrate import database_mode

log = logging.getLogger("fleetscope.maintenance")

INTERVAL_S = 60.0
INGEST_RECORD_KEEP = timedelta(days=7)
# Hours are materialised only this long after they end: rows arrive at receive
# time, so only a spool replay writes below the watermark, and that marks the
# rollup for recomputation (fleetscope/rollups.py, invalidate).
ROLLUP_SETTLE = timedelta(minutes=5)


def run_once(dsn: str, *, now: datetime | None = None) -> dict[str, object]:
    """One round of maintenance; returns what it did."""
    now = now or datetime.now(timezone.utc)
    done: dict[str, object] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        mode = database_mode(conn)
        if mode == "plain":
            watermark, rows = rollups.refresh(conn, up_to=now - ROLLUP_SETTLE)
            done["rollup_watermark"], done["rollup_rows"] = watermark, rows
        pruned = conn.execute("DELETE FROM ingest_batches WHERE written_at < %s",
                              (now - INGEST_RECORD_KEEP,)).rowcount
        done["ingest_records_pruned"] = pruned
    return done


class Maintenance:
    """Runs ``run_once`` every ``interval_s`` until closed. ``async with Maintenance(dsn):``."""

    def __init__(self, dsn: str, *, interval_s: float = INTERVAL_S) -> None:
        self.dsn = dsn
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Maintenance:
        self._task = asyncio.create_task(self._loop(), name="fleetscope-maintenance")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                done = await asyncio.to_thread(run_once, self.dsn)
                log.debug("maintenance: %s", done)
            except psycopg.Error as err:  # the database is away: the writer spools; try again later
                log.warning("maintenance skipped: %s", str(err).strip())
            await asyncio.sleep(self.interval_s)
