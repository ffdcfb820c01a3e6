"""The collector's maintenance loop: rollups and housekeeping, on a timer.

- Plain-PostgreSQL mode: refresh the hourly rollup (fleetscope/rollups.py) so
  closed hours are materialised; TimescaleDB refreshes its continuous
  aggregate by policy, so there is nothing to do in that mode.
- Prune ``ingest_batches``, the writer's record of written groups, once it is
  older than any group could be replayed (the spool keeps groups while the
  database is away; a week is far beyond that).

- Every integrity period (issue 6): record the fleet's GPU counts and run
  the integrity checks (fleetscope/integrity/) on fresh data.
- When a publication period is due: publish the snapshot with its bundle
  into the hash chain (fleetscope/chain.py).
- Every snapshot tick, as soon as it settles: compute and store the tick's
  fleet snapshot (fleetscope/snapshot.py, stored_snapshot), so every reader
  (/metrics, the dashboard, the CLI) finds it stored; prune old ticks.

Runs in a thread with its own synchronous connection: a rollup refresh is
one long statement and must not hold the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from collector.background import BackgroundLoop
from fleetscope import rollups, snapshot
from fleetscope.errors import FleetscopeError
from fleetscope.integrity import IntegritySettings
from fleetscope.migrate import database_mode
from fleetscope.rollups import ROLLUP_SETTLE

log = logging.getLogger("fleetscope.maintenance")

INTERVAL_S = 60.0
INGEST_RECORD_KEEP = timedelta(days=7)


def run_once(dsn: str, *, now: datetime | None = None, checks: IntegritySettings | None = None,
             bundle_dir: Path | None = None, publish_period: timedelta | None = None) -> dict[str, object]:
    """One round of maintenance; returns what it did.

    With ``checks``, the integrity checks run too; with ``bundle_dir`` and
    ``publish_period``, the due snapshot is published if it is not yet.
    """
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
        done["snapshots_pruned"] = snapshot.prune_stored(conn, now=now)
        if checks is not None:
            from fleetscope.integrity import record_fleet_counts, run_checks

            started = time.perf_counter()
            at = snapshot.default_as_of(now)  # a settled tick: the rows before it are written
            record_fleet_counts(conn, at=at)
            ran = run_checks(conn, at=at, settings=checks)
            done["integrity"] = {k: (r.opened, r.resolved) for k, r in ran.items() if r.opened or r.resolved}
            done["integrity_s"] = round(time.perf_counter() - started, 3)
        if bundle_dir is not None and publish_period is not None:
            from fleetscope.chain import publish_due

            try:
                published = publish_due(conn, now=now, bundle_dir=bundle_dir, period=publish_period)
            except (RuntimeError, OSError) as err:  # a bundle that never verified, a full disk: next round
                log.error("publication failed: %s", err)
                done["publish_error"] = str(err)
                published = None
            if published is not None:
                done["published"] = published.sha256
                log.info("published snapshot %s as of %s: %s", published.sha256[:12],
                         published.as_of.isoformat(), published.bundle_path)
    return done


class Maintenance(BackgroundLoop):
    """Runs ``run_once`` every ``interval_s`` until closed. ``async with Maintenance(dsn):``.

    The integrity checks run every ``integrity_interval_s`` (0: never), and
    a snapshot is published every ``publish_interval_s`` into ``bundle_dir``
    (0 or no directory: never). With ``snapshot_ticks``, each snapshot tick
    is stored as it settles (``SnapshotTicks``), on a task of its own.
    """

    TASK_NAME = "fleetscope-maintenance"

    def __init__(self, dsn: str, *, interval_s: float = INTERVAL_S, integrity_interval_s: float = 0,
                 checks: IntegritySettings | None = None, publish_interval_s: int = 0,
                 bundle_dir: Path | None = None, snapshot_ticks: bool = True) -> None:
        self.dsn = dsn
        self._ticks = SnapshotTicks(dsn) if snapshot_ticks else None
        self.interval_s = interval_s
        self.integrity_interval_s = integrity_interval_s
        self.checks = checks or IntegritySettings.from_env() if integrity_interval_s else None
        self.publish_period = timedelta(seconds=publish_interval_s) if publish_interval_s and bundle_dir else None
        self.bundle_dir = bundle_dir
        self._next_checks = 0.0

    async def _loop(self) -> None:
        while True:
            checks = None
            if self.checks is not None and time.monotonic() >= self._next_checks:
                checks, self._next_checks = self.checks, time.monotonic() + self.integrity_interval_s
            try:
                done = await asyncio.to_thread(run_once, self.dsn, checks=checks, bundle_dir=self.bundle_dir,
                                               publish_period=self.publish_period)
                log.debug("maintenance: %s", done)
            except psycopg.Error as err:  # the database is away: the writer spools; try again later
                log.warning("maintenance skipped: %s", str(err).strip())
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> Maintenance:
        if self._ticks is not None:
            await self._ticks.__aenter__()
        return await super().__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._ticks is not None:
            await self._ticks.__aexit__(*exc)


class SnapshotTicks(BackgroundLoop):
    """Stores each snapshot tick's fleet snapshot as soon as it settles. ``async with SnapshotTicks(dsn):``.

    Readers then find the tick stored and never wait for its computation;
    with several collector replicas, one computes each tick and the others
    find it stored (fleetscope/snapshot.py, stored_snapshot).
    """

    TASK_NAME = "fleetscope-snapshot-ticks"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def _loop(self) -> None:
        tick, settle = snapshot.SNAPSHOT_TICK_S, snapshot.SNAPSHOT_SETTLE_S
        while True:
            try:
                await asyncio.to_thread(snapshot.stored_snapshot_from_dsn, self.dsn)
            except (psycopg.Error, OSError, FleetscopeError) as err:  # the database is away: the next tick
                log.warning("storing the snapshot tick failed: %s", str(err).strip())
            now = time.time()
            await asyncio.sleep(((now - settle) // tick + 1) * tick + settle - now)
