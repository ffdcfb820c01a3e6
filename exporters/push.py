"""Push mode: send the exporter's metrics to the collector, for hosts behind NAT.

Every interval the registry (the same data /metrics serves) is rendered as
Prometheus text with each sample stamped with the collection time (so a
payload replayed after an outage still says when it was measured; the
collector uses those times for telemetry only, within a bounded skew, never
for liveness: DESIGN.md, Definitions), gzip'd, and POSTed with
``Authorization: Bearer <token>``.

- 2xx: sent.
- 429, 5xx, timeouts, connection errors: kept in the on-disk :class:`Spool`
  and retried with exponential backoff and jitter; the spool is replayed
  oldest first before anything newer is sent, so order is kept.
- Any other 4xx (401 bad token, 400 unparsable, 413 too large): a permanent
  rejection of that payload; logged, counted, dropped, never retried.

Pushing runs in its own thread; /metrics keeps serving whatever happens here.
"""

from __future__ import annotations

import gzip
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from prometheus_client.registry import Collector

    from exporters.spool import Spool

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 15.0
# First retry after about a second, doubling up to 5 minutes: a collector
# coming back from an outage is not stampeded by every host at once (jitter),
# and a host never waits longer than 5 minutes once it is back.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
# A push that takes longer than this is treated as failed and retried.
TIMEOUT_S = 10.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Stamped:
    """The registry's families with every sample stamped with ``at``."""

    def __init__(self, registry: Collector, at: float) -> None:
        self._registry = registry
        self._at = at

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            stamped = Metric(family.name, family.documentation, family.type, family.unit)
            stamped.samples = [
                Sample(s.name, s.labels, s.value, self._at, s.exemplar, s.native_histogram)
                for s in family.samples
            ]
            yield stamped


class Outcome:
    SENT = "sent"
    REJECTED = "rejected"  # permanent: drop it
    RETRY = "retry"


class Pusher:
    """Push the registry to ``url`` every ``interval`` seconds, in a thread."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        registry: Collector,
        spool: Spool,
        interval: float = DEFAULT_INTERVAL_S,
        timeout: float = TIMEOUT_S,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_max: float = BACKOFF_MAX_S,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("push interval must be positive")
        self.url = url
        self._token = token
        self.registry = registry
        self.spool = spool
        self.interval = interval
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._clock = clock
        self._wallclock = wallclock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures_in_a_row = 0
        self.sent = 0
        self.rejected = 0
        self.errors = 0
        self.last_success = 0.0

    # -- the metrics it adds to /metrics (a client_python collector) ------------

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "fleet_exporter_push_sent", "Payloads the collector accepted.", value=self.sent
        )
        yield CounterMetricFamily(
            "fleet_exporter_push_rejected",
            "Payloads permanently rejected (4xx other than 429) and dropped.",
            value=self.rejected,
        )
        yield CounterMetricFamily(
            "fleet_exporter_push_errors",
            "Push attempts that failed and will be retried (429, 5xx, network).",
            value=self.errors,
        )
        yield CounterMetricFamily(
            "fleet_exporter_push_dropped",
            "Unsent payloads dropped, oldest first, because the spool was full.",
            value=self.spool.dropped,
        )
        yield GaugeMetricFamily(
            "fleet_exporter_push_spool_payloads", "Payloads waiting in the spool.", len(self.spool)
        )
        yield GaugeMetricFamily(
            "fleet_exporter_push_last_success_timestamp_seconds",
            "Unix time of the last accepted push (0: none yet).",
            self.last_success,
        )

    # -- one payload -------------------------------------------------------------

    def payload(self) -> bytes:
        """Render the registry now, stamped, gzip'd."""
        text = generate_latest(_Stamped(self.registry, self._wallclock()))  # type: ignore[arg-type]
        return gzip.compress(text, compresslevel=6)

    def send(self, payload: bytes) -> tuple[str, float | None]:
        """POST one payload; return its outcome and a Retry-After if given."""
        request = urllib.request.Request(
            self.url,
            data=payload,
            method="POST",
            headers={
                "Content-Type": CONTENT_TYPE,
                "Content-Encoding": "gzip",
                "Authorization": f"Bearer {self._token}",
                "User-Agent": "fleetscope-exporter",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            return Outcome.SENT, None
        except urllib.error.HTTPError as exc:
            body = exc.read(200).decode(errors="replace") if exc.fp else ""
            if exc.code == 429 or exc.code >= 500:
                log.warning("push to %s: HTTP %d, will retry", self.url, exc.code)
                return Outcome.RETRY, retry_after_s(exc.headers.get("Retry-After"))
            log.error("push to %s rejected: HTTP %d %s; payload dropped", self.url, exc.code, body)
            return Outcome.REJECTED, None
        except (OSError, urllib.error.URLError) as exc:  # refused, reset, timeout, DNS
            log.warning("push to %s failed: %s, will retry", self.url, exc)
            return Outcome.RETRY, None

    def _backoff(self, retry_after: float | None) -> float:
        return backoff_s(self._failures_in_a_row, base=self.backoff_base, ceiling=self.backoff_max,
                         retry_after=retry_after, rng=self._rng)

    def _drain(self, deadline: float) -> float | None:
        """Send spooled payloads oldest first until empty, failure or deadline.

        Returns a backoff delay after a retryable failure, else None.
        """
        while not self._stop.is_set() and self._clock() < deadline:
            head = self.spool.peek()
            if head is None:
                return None
            path, payload = head
            outcome, retry_after = self.send(payload)
            if outcome == Outcome.RETRY:
                self.errors += 1
                delay = self._backoff(retry_after)
                self._failures_in_a_row += 1
                return delay
            self._failures_in_a_row = 0
            if outcome == Outcome.SENT:
                self.sent += 1
                self.last_success = self._wallclock()
            else:
                self.rejected += 1
            self.spool.remove(path)
        return None

    # -- the loop ----------------------------------------------------------------

    def run(self) -> None:
        """Push every interval until :meth:`stop`; replay the spool first."""
        next_tick = self._clock()
        retry_at = 0.0
        while not self._stop.is_set():
            now = self._clock()
            if now >= next_tick:
                try:
                    self.spool.put(self.payload())
                except Exception:  # a broken disk or collect must not kill the thread
                    log.exception("could not produce or spool a push payload")
                next_tick += self.interval
                if next_tick <= now:  # we fell behind (suspend, long drain)
                    next_tick = now + self.interval
            if now >= retry_at and len(self.spool):
                delay = self._drain(deadline=next_tick)
                if delay is not None:
                    retry_at = self._clock() + delay
            wake = next_tick
            if len(self.spool) and retry_at > self._clock():
                wake = min(wake, retry_at)
            self._stop.wait(max(0.0, wake - self._clock()))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="fleetscope-push", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def backoff_s(failures: int, *, base: float, ceiling: float, retry_after: float | None,
              rng: random.Random) -> float:
    """Exponential backoff with jitter ("equal jitter") after ``failures`` in a row, at least Retry-After.

    Shared by the pusher and the proof client (exporters/proving.py).
    """
    top = min(ceiling, base * 2 ** min(failures, 30))
    delay = top / 2 + rng.uniform(0, top / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, ceiling))
    return delay


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header's seconds; None when absent or an HTTP date. Shared with exporters/proving.py."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: ignore, the backoff applies
