"""The scrape scheduler: pull every registered node's /metrics once per interval.

As Prometheus' scrape manager, the scraper knows storage only through an
:class:`~collector.ingest.Appendable`: each attempt becomes exactly one
:class:`~collector.ingest.Batch` (ok with its parsed payload, or failed with
a short error), appended and committed by the task that made the attempt.

- Targets are the nodes with a ``scrape_url`` that are not paused, read from
  the database every ``refresh_s`` (changed nodes are rescheduled, removed
  ones dropped with their parse cache); when the database cannot be read the
  last list is kept. New nodes are looked for every second by primary key and
  scraped at once (issue 15: a new node's first scrape comes within one
  interval of its registration). A replica keeps only its shard: ``stable_hash(node_id) % n == i``.
- Each target is scraped at ``offset + k * interval`` on the epoch-aligned
  grid, ``offset`` a stable hash of its node id (:func:`schedule_offset`), so
  30,000 targets at 15 s are spread over the interval, not fired at once.
- One scheduler task keeps the next deadline of every target in a heap (the
  healthchecks habit: store the next deadline and index it). A scrape holds a
  slot of the concurrency semaphore from the request to the commit, so a slow
  writer (commit waits: backpressure) slows the scheduler down instead of
  piling up work. A scrape that cannot start within its interval is not made
  late: its slots are skipped and counted (``..._slots_missed_total``), and the
  target resumes at its own offset, so a stall never turns into a burst of
  catch-up scrapes.
- Plain http targets are fetched by collector/fetch.py's small GET client
  (less than half of aiohttp's CPU per scrape) over kept-alive connections
  pooled by host and port; https, credentials in the URL and redirects go
  through one shared aiohttp ``ClientSession`` with keep-alive. Both are
  opened and closed with the scraper. The per-target timeout is shorter than
  the interval.

``Scraper`` is an async context manager, started and stopped by the
collector app's ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import resource
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import aiohttp
import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector import fetch, liveness
from collector.addresses import AddressPolicy, GuardedConnector, RefusedAddress
from collector.ingest import Batch
from collector.parse import (
    DEFAULT_MAX_LABEL_LEN,
    DEFAULT_MAX_SERIES,
    ParseError,
    PayloadParser,
    SeriesCache,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from psycopg_pool import AsyncConnectionPool

    from collector.ingest import Appendable

log = logging.getLogger(__name__)

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
# Scrapes in flight at once. Most take milliseconds, but an unreachable host
# that drops packets holds its slot until the timeout: with 5 % of 30,000
# hosts at 15 s black-holed, ~1,000 slots sit in timeouts. Each slot is one
# socket and a few KB.
DEFAULT_CONCURRENCY = 1024
# A scrape may take at most this long, and never more than TIMEOUT_FRACTION of
# its interval (Prometheus' scrape_timeout defaults to 10 s and must not
# exceed the interval), so an attempt always ends before the next is due.
MAX_TIMEOUT_S = 10.0
TIMEOUT_FRACTION = 0.8
# Offsets are kept out of the last OFFSET_GUARD_FRACTION of the interval: an
# observation's slot is the slot of its *receive* time, so a scrape due just
# before a slot boundary would land in the next slot whenever it is a little
# slow, leaving one slot empty and the next with two. A target due at most
# 80 % into its interval has 3 s (at 15 s) of latency before that happens.
OFFSET_GUARD_FRACTION = 0.2
# Idle keep-alive connections live this long: longer than the default 15 s
# interval, so each scrape reuses its target's connection (Prometheus keeps one
# per target too); aiohttp's default (15 s) would race the interval.
KEEPALIVE_S = 30.0
# The scheduler re-reads the clock at least this often, so a wall-clock jump
# is noticed within a second (deadlines are on the epoch grid: wall time).
MAX_SLEEP_S = 1.0
# A payload larger than this is refused ("too large"); the parser's series
# limit (4096) at 256-byte lines is 1 MiB, so 4 MiB is generous.
MAX_BODY_BYTES = 4 * 1024 * 1024
# On stop, in-flight scrapes get this long to finish and commit their
# observation (their own timeout is at most MAX_TIMEOUT_S), then are cancelled.
STOP_GRACE_S = MAX_TIMEOUT_S + 2.0  # (with a larger timeout_s: that + 2 s)
# Text 0.0.4 first: the parser's fast path is cheapest on it, and a new
# OpenMetrics shape costs a full reference parse (collector/parse.py).
# OpenMetrics is still accepted from exporters that serve only it.
ACCEPT = ("text/plain;version=0.0.4;q=1.0,application/openmetrics-text;version=1.0.0;q=0.5,"
          "application/openmetrics-text;version=0.0.1;q=0.4,*/*;q=0.1")
ACCEPT_ENCODING = "gzip"
USER_AGENT = "fleetscope-collector"
MAX_ERROR_LEN = 200
# Soft open-files limit asked for at start (see _raise_nofile_limit).
MAX_NOFILE = 1 << 20
# Idle kept-alive connections of collector/fetch.py's pool: one per target
# where the open-files limit allows (a scrape then never waits for a TCP
# handshake), less NOFILE_RESERVE descriptors for everything else.
MAX_IDLE_CONNECTIONS = 100_000
NOFILE_RESERVE = 1024

# Values of the `result` label of fleetscope_collector_scrapes_total.
RESULTS = ("ok", "timeout", "error", "http", "unparsable", "refused")

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


# -- definitions: pure functions ---------------------------------------------


def stable_hash(node_id: int, *, purpose: bytes = b"") -> int:
    """A 64-bit hash of a node id, the same in every process and on every replica.

    blake2b (8-byte digest, ``person=purpose``) of the id's decimal text, read
    little-endian; Python's ``hash()`` is salted per process and would split
    shards differently on each replica.
    """
    digest = hashlib.blake2b(str(int(node_id)).encode(), digest_size=8, person=purpose).digest()
    return int.from_bytes(digest, "little")


def shard_of(node_id: int, n: int) -> int:
    """The shard (0 to n-1) that scrapes ``node_id`` among ``n`` replicas."""
    return stable_hash(node_id) % n


def in_shard(node_id: int, shard: tuple[int, int]) -> bool:
    """Whether replica ``shard = (i, n)`` scrapes ``node_id``."""
    i, n = shard
    return shard_of(node_id, n) == i


def schedule_offset(node_id: int, period_s: float) -> float:
    """Seconds after each epoch-aligned interval start at which the node is scraped.

    Stable per node, uniform over [0, (1 - OFFSET_GUARD_FRACTION) * period_s)
    at microsecond resolution. Uses a hash independent of the shard's, so the
    targets of one shard are as spread as the whole fleet's.
    """
    span_us = max(1, int(period_s * (1.0 - OFFSET_GUARD_FRACTION) * 1_000_000))
    return (stable_hash(node_id, purpose=b"offset") % span_us) / 1_000_000


def next_due(now: float, offset: float, period_s: float) -> float:
    """The first time ``offset + k * period_s`` (k an integer) at or after ``now``."""
    k = math.ceil((now - offset) / period_s)
    due = offset + k * period_s
    return due if due >= now else due + period_s  # float rounding


def timeout_for(period_s: float, max_timeout_s: float = MAX_TIMEOUT_S) -> float:
    """The scrape timeout for a target scraped every ``period_s``."""
    return min(max_timeout_s, TIMEOUT_FRACTION * period_s)


def slots_missed(due: float, start: float, period_s: float) -> int:
    """How many of a target's due times in [due, start] a scrape starting at ``start`` gives up.

    0 when it starts within its interval (``start - due < period_s``);
    otherwise every due time up to and including the latest one at or before
    ``start``: the target waits for its next due time after ``start``.
    """
    late = start - due
    if late < period_s:
        return 0
    return math.floor(late / period_s) + 1


# -- the scraper -------------------------------------------------------------


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


class Scraper:
    """Scrapes this replica's shard of the registered nodes into ``appendable``.

    ``db`` is a psycopg ``AsyncConnectionPool`` or a DSN (then the scraper keeps
    one connection of its own, reopened after an outage); ``pool``, when given,
    is used instead of either. ``registry`` is the registry the collector's
    /metrics serves (default: a private one). ``timeout_s`` caps the
    per-target timeout (which is also at most 80 % of the interval);
    ``max_body_bytes``, ``max_series`` and ``max_label_len`` bound one payload.
    ``time_scale`` multiplies every interval; it exists for tests only, so that
    a 5 s interval can be run at 0.5 s. ``clock`` is the wall clock (epoch
    seconds); deadlines are on the epoch grid.
    """

    def __init__(self, db: AsyncConnectionPool | str | None, appendable: Appendable, *,
                 pool: AsyncConnectionPool | None = None,
                 shard: tuple[int, int] = (0, 1), collector_id: str = "collector",
                 registry: CollectorRegistry | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY, refresh_s: float = DEFAULT_REFRESH_S,
                 timeout_s: float = MAX_TIMEOUT_S, max_body_bytes: int = MAX_BODY_BYTES,
                 max_series: int = DEFAULT_MAX_SERIES, max_label_len: int = DEFAULT_MAX_LABEL_LEN,
                 parser: PayloadParser | None = None, time_scale: float = 1.0,
                 clock: Callable[[], float] = time.time, addresses: AddressPolicy | None = None) -> None:
        i, n = shard
        if not (isinstance(i, int) and isinstance(n, int) and n >= 1 and 0 <= i < n):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if refresh_s <= 0:
            raise ValueError(f"refresh_s must be > 0, got {refresh_s}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if pool is None and db is None:
            raise ValueError("a DSN or a connection pool is needed to read the targets")
        self._db = pool if pool is not None else db
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._appendable = appendable
        self.shard = (i, n)
        self.collector_id = collector_id
        self.concurrency = concurrency
        self.refresh_s = refresh_s
        self.time_scale = time_scale
        self._parser = parser or PayloadParser(max_series=max_series, max_label_len=max_label_len)
        self._clock = clock
        # Where scrapes may connect (issue 15); by default what
        # FLEETSCOPE_ALLOW_PRIVATE_TARGETS says (the app passes its settings').
        self.addresses = addresses if addresses is not None else AddressPolicy.from_environ()
        self.registry = registry if registry is not None else CollectorRegistry()
        self._targets: dict[int, Target] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._generation = 0
        self._sem: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._fetch: fetch.Pool | None = None
        self._conn: psycopg.AsyncConnection | None = None
        self._tasks: list[asyncio.Task] = []
        self._inflight: set[asyncio.Task] = set()
        self._wake: asyncio.Future | None = None
        self._loaded = False
        self._max_node_id = 0  # the highest node id in a target list read so far
        self._headers = {"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING,
                         "User-Agent": f"{USER_AGENT}/{self.collector_id}"}
        self._init_metrics()

    def _init_metrics(self) -> None:
        r = self.registry
        self._m_scrapes = Counter(
            "fleetscope_collector_scrapes", "Scrape attempts by result: ok, timeout, "
            "error (connection), http (non-200), unparsable, refused (no evidence of a live GPU: "
            "collector/liveness.py).", ["result"], registry=r)
        self._m_result = {res: self._m_scrapes.labels(res) for res in RESULTS}
        self._m_duration = Histogram(
            "fleetscope_collector_scrape_duration_seconds",
            "Time from sending a scrape request to having its body (or failing).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=r)
        self._m_targets = Gauge(
            "fleetscope_collector_scrape_targets", "Targets this replica scrapes (its shard).", registry=r)
        self._m_missed = Counter(
            "fleetscope_collector_scrape_slots_missed",
            "Scheduled scrapes skipped because they could not start within their interval "
            "(concurrency limit or writer backpressure).", registry=r)
        self._m_refresh_errors = Counter(
            "fleetscope_collector_scrape_refresh_errors",
            "Failed reads of the target list (the last list is kept).", registry=r)
        self._m_inflight = Gauge(
            "fleetscope_collector_scrapes_in_flight", "Scrapes in flight.", registry=r)

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Scraper:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the HTTP session, load the targets once, and start scheduling."""
        nofile = _raise_nofile_limit()
        self._sem = asyncio.Semaphore(self.concurrency)
        # Idle kept-alive connections, each a file descriptor: what the
        # open-files limit leaves after the scrapes in flight, aiohttp's own
        # connections and a reserve for the database and the push receiver.
        self._fetch = fetch.Pool(max_idle=max(0, min(MAX_IDLE_CONNECTIONS,
                                                     nofile - 2 * self.concurrency - NOFILE_RESERVE)),
                                 idle_s=KEEPALIVE_S, addresses=self.addresses)
        connector = GuardedConnector(self.addresses, limit=self.concurrency, keepalive_timeout=KEEPALIVE_S,
                                     ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            # Per-request timeouts are set per target; this is a backstop.
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        try:
            await self.refresh()
        except Exception as err:  # noqa: BLE001 - the refresh loop retries
            log.warning("scraper %s: cannot read targets yet (%s); retrying every %.0f s",
                        self.collector_id, _short(err), self.refresh_s)
        self._tasks = [asyncio.create_task(self._schedule_loop(), name="scrape-scheduler"),
                       asyncio.create_task(self._refresh_loop(), name="scrape-refresh"),
                       asyncio.create_task(self._new_targets_loop(), name="scrape-new-targets")]

    async def stop(self) -> None:
        """Stop scheduling, let in-flight scrapes commit (bounded), close the session."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._inflight:
            grace = max(STOP_GRACE_S, self.timeout_s + 2.0)
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._fetch is not None:
            self._fetch.close()
            self._fetch = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # -- targets ---------------------------------------------------------------

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
                log.debug("scraper %s: cannot look for new targets: %s", self.collector_id, _short(err))
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
                            self.collector_id, len(self._targets), _short(err))

    # -- scheduling ------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until :meth:`_poke`."""
        loop = asyncio.get_running_loop()
        self._wake = fut = loop.create_future()
        handle = loop.call_later(min(max(delay, 0.0), MAX_SLEEP_S), _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._wake = None

    async def _schedule_loop(self) -> None:
        clock = self._clock
        sem = self._sem
        assert sem is not None
        while True:
            heap = self._heap  # apply_targets may rebuild it
            if not heap:
                await self._sleep(MAX_SLEEP_S)
                continue
            due, node_id, generation = heap[0]
            now = clock()
            if due > now:
                await self._sleep(due - now)
                continue
            heapq.heappop(heap)
            target = self._targets.get(node_id)
            if target is None or target.generation != generation:
                continue  # removed or rescheduled
            period = target.period_s
            if target.busy:
                # The previous attempt has not committed yet (writer backpressure).
                missed = max(1, slots_missed(due, now, period))
                self._m_missed.inc(missed)
                heapq.heappush(heap, (due + missed * period, node_id, generation))
                continue
            start = now
            if sem.locked():  # the concurrency limit: wait for a slot
                await sem.acquire()
                start = clock()
            else:
                await sem.acquire()  # free: returns at once
            missed = slots_missed(due, start, period)
            if missed:
                # Could not start within its interval: skip to the first due
                # time after now, never catch up with a burst.
                sem.release()
                self._m_missed.inc(missed)
                heapq.heappush(self._heap, (due + missed * period, node_id, generation))
                continue
            heapq.heappush(self._heap, (due + period, node_id, generation))
            target.busy = True
            task = asyncio.create_task(self._scrape(target))
            self._inflight.add(task)
            self._m_inflight.inc()
            task.add_done_callback(self._scrape_done)

    def _scrape_done(self, task: asyncio.Task) -> None:
        self._inflight.discard(task)
        self._m_inflight.dec()
        assert self._sem is not None
        self._sem.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("scrape task failed", exc_info=task.exception())

    # -- one attempt -----------------------------------------------------------

    async def _scrape(self, target: Target) -> None:
        """Make one attempt and commit exactly one observation of it."""
        try:
            batch = await self.attempt(target)
            appender = self._appendable.appender()
            appender.append(batch)
            try:
                await appender.commit()
            except BaseException:
                appender.rollback()
                raise
        finally:
            target.busy = False

    async def attempt(self, target: Target) -> Batch:
        """Scrape ``target`` once and return its observation (never raises for the target's faults)."""
        session = self._session
        assert session is not None
        t0 = time.perf_counter()
        error: str | None = None
        result = "ok"
        body = b""
        content_type: str | None = None
        too_large = f"too large: over {self.max_body_bytes} bytes"
        try:
            request = target.request
            if request is not None:
                assert self._fetch is not None
                async with asyncio.timeout(target.timeout.total):
                    fetched = await self._fetch.get(request, max_bytes=self.max_body_bytes)
                if fetched.status in fetch.REDIRECTS:
                    # Redirects are aiohttp's to follow, for this target from now on.
                    target.request = request = None
                elif fetched.status != 200:
                    error, result = f"http {fetched.status}", "http"
                else:
                    content_type = fetched.headers.get("content-type")
                    body = fetched.body
            if request is None:
                async with session.get(target.url, timeout=target.timeout) as resp:
                    if resp.status != 200:
                        error, result = f"http {resp.status}", "http"
                    else:
                        content_type = resp.headers.get("Content-Type")
                        body = await _read_body(resp, self.max_body_bytes)
                        if body is None:
                            error, result = too_large, "error"
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            error, result = "timeout", "timeout"
        except fetch.TooLarge:
            error, result = too_large, "error"
        except fetch.Disconnected:
            error, result = "server disconnected", "error"
        except fetch.BadResponse as err:
            error, result = _short(f"bad response: {err}"), "error"
        except RefusedAddress as err:  # issue 15: no connection to a refused address, redirects included
            error, result = _short(f"refused: {err}"), "refused"
        except ConnectionRefusedError:  # (aiohttp wraps its own in ClientConnectorError, below)
            error, result = "connection refused", "error"
        except socket.gaierror as err:
            error, result = _short(f"dns: {err.strerror or err}"), "error"
        except aiohttp.ClientConnectorError as err:
            error = _connect_error(err)
            result = "refused" if isinstance(err.os_error, RefusedAddress) else "error"
        except aiohttp.ServerDisconnectedError:
            error, result = "server disconnected", "error"
        except aiohttp.ClientPayloadError as err:
            error, result = _short(f"bad response body: {err}"), "error"
        except aiohttp.ClientResponseError as err:
            error, result = _short(f"bad response: {err.message}"), "error"
        except (aiohttp.ClientError, OSError, ValueError) as err:
            error, result = _short(f"{type(err).__name__}: {err}"), "error"
        elapsed = time.perf_counter() - t0
        received = self._clock()
        self._m_duration.observe(elapsed)
        payload = None
        if error is None:
            try:
                payload = self._parser.parse(body, content_type=content_type, cache=target.cache)
            except ParseError as err:
                # Only the reason code: the text of a foreign page never goes
                # into observations.error (issue 15).
                error, result = f"unparsable: {err.reason}", "unparsable"
            else:
                refused = liveness.refusal(payload)
                if refused is not None:  # issue 15: any Prometheus endpoint is not a GPU host
                    error, result, payload = f"refused: {refused[0]}", "refused", None
        self._m_result[result].inc()
        return Batch(
            node_id=target.node_id,
            received_at=datetime.fromtimestamp(received, timezone.utc),
            slot=math.floor(received / target.interval_s),
            source="scrape",
            ok=error is None,
            latency_ms=round(elapsed * 1000.0, 3),
            error=error,
            payload=payload,
        )


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The response body, or None when it exceeds ``limit`` bytes (read no further)."""
    length = resp.content_length
    if length is not None and length <= limit and not resp.headers.get("Content-Encoding"):
        body = await resp.read()
        return body if len(body) <= limit else None
    if length is not None and length > limit:
        return None
    # Unknown or compressed length: the decompressed body is bounded as it streams.
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _connect_error(err: aiohttp.ClientConnectorError) -> str:
    os_error = err.os_error
    if isinstance(os_error, RefusedAddress):
        return _short(f"refused: {os_error}")
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return _short(f"dns: {os_error.strerror or os_error}")
    return _short(f"connect: {getattr(os_error, 'strerror', None) or os_error}")


def _short(err: object) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= MAX_ERROR_LEN else text[: MAX_ERROR_LEN - 3] + "..."


def _raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one.

    Each target keeps its keep-alive connection between scrapes, one socket
    per target, and the usual soft limit (1024) is far below 30,000. Go's
    runtime does the same at start-up since Go 1.19 (golang/go#46279), so
    Prometheus gets it for free. Returns the soft limit in force.
    """
    soft = 1024
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = MAX_NOFILE if hard == resource.RLIM_INFINITY else min(hard, MAX_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ValueError, OSError):  # not permitted: keep the soft limit
        pass
    return MAX_NOFILE if soft == resource.RLIM_INFINITY else soft
