"""The scraper: pull every registered node's /metrics once per interval.

As Prometheus' scrape manager, the scraper knows storage only through an
:class:`~collector.ingest.Appendable`: each attempt becomes exactly one
:class:`~collector.ingest.Batch` (ok with its parsed payload, or failed with
a short error), appended and committed by the task that made the attempt.

- Its targets, read from the database and refreshed, are collector/targets.py's
  (a new node is scraped at once; a replica keeps only its shard).
- Each target is scraped at ``offset + k * interval`` on the epoch-aligned
  grid (collector/schedule.py: the shard, offset, due time, timeout and missed
  slots are pure functions there), so 30,000 targets at 15 s are spread over
  the interval, not fired at once.
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
  the interval. A failed attempt's error text is collector/scrape_errors.py's.
- This module also holds the reading of an aiohttp response body within the
  payload limit, and the raising of the open-files limit at start.

``Scraper`` is an async context manager, started and stopped by the
collector app's ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import resource
import socket
import time
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
)
from collector.schedule import MAX_TIMEOUT_S, slots_missed
from collector.scrape_errors import connect_error, short_error
from collector.targets import DEFAULT_REFRESH_S, Target, TargetList

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg_pool import AsyncConnectionPool

    from collector.ingest import Appendable

log = logging.getLogger(__name__)

# Scrapes in flight at once. Most take milliseconds, but an unreachable host
# that drops packets holds its slot until the timeout: with 5 % of 30,000
# hosts at 15 s black-holed, ~1,000 slots sit in timeouts. Each slot is one
# socket and a few KB.
DEFAULT_CONCURRENCY = 1024
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
# Soft open-files limit asked for at start (see _raise_nofile_limit).
MAX_NOFILE = 1 << 20
# Idle kept-alive connections of collector/fetch.py's pool: one per target
# where the open-files limit allows (a scrape then never waits for a TCP
# handshake), less NOFILE_RESERVE descriptors for everything else.
MAX_IDLE_CONNECTIONS = 100_000
NOFILE_RESERVE = 1024

# Values of the `result` label of fleetscope_collector_scrapes_total.
RESULTS = ("ok", "timeout", "error", "http", "unparsable", "refused")


class Scraper(TargetList):
    """Scrapes this replica's shard of the registered nodes into ``appendable``.

    ``db`` is a psycopg ``AsyncConnectionPool`` or a DSN (then the scraper keeps
    one connection of its own, reopened after an outage); ``pool``, when given,
    is used instead of either. ``registry`` is the registry the collector's
    /metrics serves (default: a private one). ``timeout_s`` caps the
    per-target timeout (which is also at most 80 % of the interval);
    ``max_body_bytes``, ``max_series`` and ``max_label_len`` bound one payload.
    ``time_scale`` multiplies every interval; it exists for tests only, so that
    a 5 s interval can be run at 0.5 s. ``clock`` is the wall clock (epoch
    seconds); deadlines are on the epoch grid. Its target list (``targets``,
    ``refresh``, ``apply_targets``, ``add_new_targets``) is
    :class:`~collector.targets.TargetList`'s.
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
                        self.collector_id, short_error(err), self.refresh_s)
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
            error, result = short_error(f"bad response: {err}"), "error"
        except RefusedAddress as err:  # issue 15: no connection to a refused address, redirects included
            error, result = short_error(f"refused: {err}"), "refused"
        except ConnectionRefusedError:  # (aiohttp wraps its own in ClientConnectorError, below)
            error, result = "connection refused", "error"
        except socket.gaierror as err:
            error, result = short_error(f"dns: {err.strerror or err}"), "error"
        except aiohttp.ClientConnectorError as err:
            error = connect_error(err)
            result = "refused" if isinstance(err.os_error, RefusedAddress) else "error"
        except aiohttp.ServerDisconnectedError:
            error, result = "server disconnected", "error"
        except aiohttp.ClientPayloadError as err:
            error, result = short_error(f"bad response body: {err}"), "error"
        except aiohttp.ClientResponseError as err:
            error, result = short_error(f"bad response: {err.message}"), "error"
        except (aiohttp.ClientError, OSError, ValueError) as err:
            error, result = short_error(f"{type(err).__name__}: {err}"), "error"
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
