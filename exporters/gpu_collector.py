"""The client_python collector that reads GPUs on scrape.

The data source (an NVML source, a simulated host, an Apple host) is passed
in, like ``proc='/proc'`` in client_python's process_collector; anything with
a ``read() -> HostReading`` method will do. Reading happens inside
``collect()``, never in a background loop, so a scrape either shows what the
GPUs say now or says that it could not read them
(``fleet_exporter_last_collect_success 0``); it never serves old data
silently.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from prometheus_client.registry import Collector

from exporters import metrics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from prometheus_client.metrics_core import Metric

    from exporters.reading import HostReading

log = logging.getLogger(__name__)

# Two scrapes this close together (Prometheus plus a push, or two
# Prometheus servers in HA) share one read of the GPUs. Short enough that no
# scrape at a sane interval (>= 5 s) ever sees a cached reading.
DEFAULT_CACHE_SECONDS = 1.0


class Source(Protocol):
    """Where readings come from: NVML, the simulator, ioreg."""

    def read(self) -> HostReading: ...


class GpuCollector(Collector):
    """Yield the GPU metric families and the exporter's health on scrape."""

    def __init__(
        self,
        source: Source,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: list[Metric] | None = None
        self._cached_at = 0.0
        self._failing = False

    def describe(self) -> Iterable[Metric]:
        # Registering must not touch the GPUs (NVML may not even load yet).
        return ()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached_at < self._cache_seconds:
                return self._cached
            start = time.perf_counter()
            reading: HostReading | None
            try:
                reading = self.source.read()
                success = True
                if self._failing:
                    log.info("reading GPUs works again")
                self._failing = False
            except Exception as exc:  # a failing backend must not break /metrics
                reading, success = None, False
                if not self._failing:
                    log.warning("reading GPUs failed: %s", exc, exc_info=True)
                else:
                    log.debug("reading GPUs still fails: %s", exc)
                self._failing = True
            duration = time.perf_counter() - start
            self._cached = metrics.families(reading, success=success, duration=duration)
            self._cached_at = now
            return self._cached
