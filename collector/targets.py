"""The scrape targets: the nodes this replica scrapes, kept in step with the database.

- Targets are the nodes with a ``scrape_url`` that are not paused, read from
  the database every ``refresh_s`` (changed nodes are rescheduled, removed
  ones dropped with their parse cache); when the database cannot be read the
  last list is kept. New nodes are looked for every second by primary key and
  scraped at once (issue 15: a new node's first scrape comes within one
  interval of its registration). A replica keeps only its shard
  (collector/schedule.py).
- :class:`Target` is one node and its scrape state; :class:`TargetList` is
  the part of collector/scrape.py's ``Scraper`` that reads and applies the
  target list (a mixin: the scheduler's heap, its wake-up and its metrics are
  the Scraper's).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import psycopg

from collector import fetch
from collector.parse import SeriesCache
from collector.schedule import in_shard, next_due, schedule_offset, timeout_for
from collector.scrape_errors import short_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from prometheus_client import Counter, Gauge
    from psycopg_pool import AsyncConnectionPool

# The scraper's log: these lines are the scraper's, as before the split.
log = logging.getLogger("collector.scrape")

# The database is re-read this often for new, changed and removed targets.
# Changes and removals are rare; 30 s costs one indexed query (~30 ms at
# 30,000 rows). New nodes are found sooner (NEW_TARGETS_POLL_S).
DEFAULT_REFRESH_S = 30.0
# New nodes are looked for this often (one indexed query on the primary key,
# a few hundred microseconds), so that a node registered with a scrape_url is
# first scraped within one interval of its registration, not after the next
# full refresh (issue 15, item 8): it is scraped as soon as it is seen.
NEW_TARGETS_POLL_S = 1.0
# How long one refresh may take before it counts as a database outage.
REFRESH_TIMEOUT_S = 10.0

TARGETS_SQL = """
SELECT node_id, scrape_url, interval_s
  FROM nodes
 WHERE scrape_url IS NOT NULL AND NOT paused
 ORDER BY node_id
"""
# The targets registered since the highest node id seen.
NEW_TARGETS_SQL = """
SELECT node_id, scrape_url, interval_s
  FROM nodes
 WHERE node_id > %s AND scrape_url IS NOT NULL AND NOT paused
 ORDER BY node_id
"""


@dataclass(slots=True, eq=False)
class Target:
    """One node this replica scrapes, and its scrape state."""

    node_id: int
    url: str
    interval_s: int       # the node's interval: its uptime slot grid
    period_s: float       # seconds between scrapes (interval_s x time_scale)
    offset: float
    timeout: aiohttp.ClientTimeout
    cache: SeriesCache
    generation: int       # bumped when the schedule changes; stale heap entries are dropped
    busy: bool = False    # an attempt is in flight (or waiting to commit)
    # Its GET for collector/fetch.py; None: aiohttp (https, credentials in
    # the URL, or after a redirect).
    request: fetch.Request | None = None


class TargetList:
    """The target list of a ``Scraper`` (collector/scrape.py): read, applied, refreshed.

    A mixin: ``Scraper.__init__`` sets the attributes below, and
    ``Scraper._poke`` wakes its scheduler when targets are added.
    """

    _db: AsyncConnectionPool | str
    _conn: psycopg.AsyncConnection | None
    _targets: dict[int, Target]
    _heap: list[tuple[float, int, int]]
    _generation: int
    _loaded: bool
    _max_node_id: int
    _headers: dict[str, str]
    _fetch: fetch.Pool | None
    _clock: Callable[[], float]
    _m_targets: Gauge
    _m_refresh_errors: Counter
    _poke: Callable[[], None]
    shard: tuple[int, int]
    collector_id: str
    refresh_s: float
    time_scale: float
    timeout_s: float

    @property
    def targets(self) -> dict[int, Target]:
        """This replica's targets by node id (read-only view for tests and status)."""
        return dict(self._targets)

    async def refresh(self) -> int:
        """Read the targets from the database and apply them; return their count.

        Raises on a database error, leaving the current targets as they were.
        """
        async with asyncio.timeout(REFRESH_TIMEOUT_S):
            rows = await self._load()
        self.apply_targets(rows)
        return len(self._targets)

    async def _load(self, sql: str = TARGETS_SQL, params: tuple = ()) -> list[tuple[int, str, int]]:
        if not isinstance(self._db, str):
            async with self._db.connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._db, autocommit=True, connect_timeout=int(REFRESH_TIMEOUT_S))
            cur = await self._conn.execute(sql, params)
            return await cur.fetchall()
        except BaseException:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                try:
                    await conn.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
            raise

    def apply_targets(self, rows: Iterable[tuple[int, str, int]]) -> None:
        """Make ``rows`` (node_id, scrape_url, interval_s) this replica's targets.

        Rows outside the shard are ignored. A new target is scheduled at its
        next due time; a target whose URL or interval changed is rescheduled
        (and its parse cache dropped when the URL changed); a target no longer
        listed is dropped with its cache (an attempt already in flight still
        commits its observation).
        """
        now = self._clock()
        old = self._targets
        new: dict[int, Target] = {}
        for node_id, url, interval_s in rows:
            self._max_node_id = max(self._max_node_id, node_id)
            if not in_shard(node_id, self.shard):
                continue
            target = old.get(node_id)
            if target is not None and target.url == url and target.interval_s == interval_s:
                new[node_id] = target
                continue
            period = interval_s * self.time_scale
            self._generation += 1
            offset = schedule_offset(node_id, period)
            timeout = aiohttp.ClientTimeout(total=timeout_for(period, self.timeout_s))
            if target is None:
                target = Target(node_id=node_id, url=url, interval_s=interval_s, period_s=period,
                                offset=offset, timeout=timeout, cache=SeriesCache(),
                                generation=self._generation, request=self._request(url))
            else:  # changed in place, so an attempt in flight still clears `busy`
                if target.url != url:
                    target.cache = SeriesCache()
                    target.request = self._request(url)
                target.url, target.interval_s, target.period_s = url, interval_s, period
                target.offset, target.timeout, target.generation = offset, timeout, self._generation
            new[node_id] = target
            heapq.heappush(self._heap, (next_due(now, target.offset, period), node_id, target.generation))
        self._targets = new
        self._m_targets.set(len(new))
        self._loaded = True
        # Stale heap entries (removed or rescheduled targets) are dropped when
        # popped; rebuild when they dominate so the heap stays O(targets).
        if len(self._heap) > 2 * len(new) + 1024:
            self._heap = [e for e in self._heap if (t := new.get(e[1])) is not None and t.generation == e[2]]
            heapq.heapify(self._heap)
        self._poke()

    def add_new_targets(self, rows: Iterable[tuple[int, str, int]]) -> int:
        """Add targets not known yet (rows as ``apply_targets``'), each due now; return how many.

        A new node is scraped at once rather than at its next offset, so its
        first observation comes within one interval of its registration
        (issue 15, item 8); later scrapes follow its offset as usual.
        """
        now = self._clock()
        added = 0
        for node_id, url, interval_s in rows:
            self._max_node_id = max(self._max_node_id, node_id)
            if node_id in self._targets or not in_shard(node_id, self.shard):
                continue
            period = interval_s * self.time_scale
            self._generation += 1
            target = Target(node_id=node_id, url=url, interval_s=interval_s, period_s=period,
                            offset=schedule_offset(node_id, period),
                            timeout=aiohttp.ClientTimeout(total=timeout_for(period, self.timeout_s)),
                            cache=SeriesCache(), generation=self._generation, request=self._request(url))
            self._targets[node_id] = target
            heapq.heappush(self._heap, (now, node_id, target.generation))
            added += 1
        if added:
            self._m_targets.set(len(self._targets))
            self._poke()
        return added

    async def _new_targets_loop(self) -> None:
        while True:
            await asyncio.sleep(NEW_TARGETS_POLL_S)
            if not self._loaded:
                continue  # the full refresh comes first
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT_S):
                    rows = await self._load(NEW_TARGETS_SQL, (self._max_node_id,))
            except Exception as err:  # noqa: BLE001 - the next poll, or the full refresh, retries
                log.debug("scraper %s: cannot look for new targets: %s", self.collector_id, short_error(err))
                continue
            self.add_new_targets(rows)

    def _request(self, url: str) -> fetch.Request | None:
        return fetch.Request(url, self._headers) if fetch.supported(url) else None

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            if self._fetch is not None:
                self._fetch.sweep()
            try:
                await self.refresh()
            except Exception as err:  # noqa: BLE001 - a DB outage keeps the last list
                self._m_refresh_errors.inc()
                log.warning("scraper %s: cannot refresh targets, keeping %d: %s",
                            self.collector_id, len(self._targets), short_error(err))
