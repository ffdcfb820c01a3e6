"""The remote_write receiver: ``POST /api/v1/write`` from a site's own Prometheus (issue 18).

A site that already runs Prometheus with dcgm-exporter (or nvidia_gpu_exporter,
or our exporter) adds a ``remote_write`` block and a relabelling that puts
``fleetscope_node_id`` on every series of a node (docs/prometheus.md). This
receives Prometheus remote_write 1.0 (protobuf ``prometheus.WriteRequest``,
snappy block format) with the OPERATOR's token and turns each node's series
into the same ``Batch`` a push makes (collector/push.py): the same metric
mapping and validation (collector/parse.py ``PayloadParser.from_entries``),
the same liveness rule (collector/liveness.py), the same per-node rate and
series limits, and the same writer, spool and 204-after-settled durability.

What is refused, and how (Prometheus retries 5xx and 429 with backoff, and
drops a request answered with any other 4xx; docs/prometheus.md):

- the whole request, nothing of it written, with a JSON reason counted in
  ``fleetscope_collector_rejects_total``: 401 bad token, 415 an encoding or
  content type other than snappy protobuf 1.0, 413 too large (compressed or
  as snappy says it inflates), 400 bad snappy, bad protobuf, a series without
  a valid ``fleetscope_node_id``, and 403 a series naming a node that is not
  the token's operator's (an unknown node gets the same answer: the answer
  does not tell whether another operator's node exists);
- storage that cannot take the batches (writer closed, spool full): 503 with
  Retry-After, so Prometheus resends them;
- per node, the request still answered 204: a scrape older than the node's
  interval is stored as telemetry only, at its own time (a sender cannot
  backfill uptime), and dropped as stale past TELEMETRY_MAX_AGE_S; a node
  that came again sooner than a push may (too_often) or whose samples prove
  no live GPU (the liveness rule) is not written. Refusing the whole request
  for one node would make Prometheus drop every node's samples, for good.

Observation time is the collector's receive time. Prometheus stamps every
sample of one scrape with the scrape's time and appends its own report
(``up`` among it) after them, so a node's samples of one timestamp are one
payload, ended by ``up``. Of each node's samples in one request the newest
whole scrape is written; older ones in the same request are superseded (one
row per GPU per observation, as for a push), and a newer unfinished one
(cut off by the request's sample count) is held until its end arrives
(``_node_batch``). ``up`` 0 is a failed observation (Prometheus could not
scrape the node's exporter).
Prometheus' staleness markers (a NaN with a fixed bit pattern, sent when a
series disappears) are not values and are skipped.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

# Snappy's block format through cramjam (Rust, wheels for every platform we
# run on, maintained; python-snappy 0.7 is itself a wrapper of it): its
# decompress_raw_len reads the inflated size from the header, so a snappy
# bomb is refused before anything is allocated (`_unsnappy`).
import cramjam
import numpy as np
from aiohttp import web
from google.protobuf.message import DecodeError

from collector import liveness
from collector import metricnames as mn
from collector.ingest import Batch, answered, store
from collector.lru import LruDict
from collector.ratelimit import PushRateLimiter
from collector.requests import (
    R_DECOMPRESSED_TOO_LARGE,
    Rejected,
    read_body,
    within_deadline,
)
from collector.prompb import check_headers, RawWriteRequest, TimeSeries, is_stale_marker
from collector.parse import R_TOO_MANY_SERIES, ParseError, PayloadParser, SeriesCache
from collector.series_table import SeriesTable
from fleetscope.integrity import cloned_telemetry
from fleetscope.uptime import slot_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg_pool import AsyncConnectionPool

    from collector.auth import Authenticator
    from collector.ingest import Appendable
    from collector.parse import ParsedPayload
    from collector.selfmetrics import SelfMetrics
    from collector.settings import CollectorSettings

log = logging.getLogger(__name__)

# The label that names a series' node (set by the sender's relabelling).
NODE_LABEL = "fleetscope_node_id"
# node_id is a bigserial: at most 19 digits.
MAX_NODE_ID_DIGITS = 18
# A scrape older than the node's interval is telemetry only (no uptime
# backfill); older than half the cloned-telemetry check's window it is dropped
# as stale: that check would already have looked past it (late copies hiding).
TELEMETRY_MAX_AGE_S = cloned_telemetry.DEFAULT_WINDOW.total_seconds() / 2
# Series classified, by their labels as sent: the same series arrive in every
# request, so most requests classify nothing. Bounded as re's pattern cache
# is: emptied when full (a few hundred bytes an entry).
CLASSIFY_CACHE_ENTRIES = 200_000
# The nodes of an operator, cached like tokens (auth's cache_s); a node id not
# in the cache makes one lookup before the request is refused.
OPERATOR_NODES_SQL = "SELECT node_id, interval_s FROM nodes WHERE operator_id = %s"

# Reasons (the `reason` label of fleetscope_collector_rejects_total).
R_BAD_SNAPPY = "bad_snappy"
R_BAD_PROTOBUF = "bad_protobuf"
R_NO_NODE_LABEL = "missing_node_label"
R_BAD_NODE_LABEL = "invalid_node_label"
R_NOT_YOUR_NODE = "not_your_node"

# Prometheus' own series about each scrape (scrape/scrape.go, scrapeLoop.report),
# appended after the scrape's samples, with the scrape's timestamp: ``up``
# ends a scrape (remote_write cuts requests by sample count, not by target, so
# one scrape may straddle two requests). The others are recognised, not stored.
ROLE_UP, ROLE_REPORT = 1, 2
REPORT_SERIES = {
    "up": ROLE_UP, "scrape_samples_post_metric_relabeling": ROLE_REPORT,
    "scrape_duration_seconds": ROLE_REPORT, "scrape_samples_scraped": ROLE_REPORT,
    "scrape_series_added": ROLE_REPORT, "scrape_timeout_seconds": ROLE_REPORT,
    "scrape_sample_limit": ROLE_REPORT, "scrape_body_size_bytes": ROLE_REPORT,
}

# Outcomes of received samples (fleetscope_collector_remote_write_samples_total).
O_WRITTEN = "written"        # in a node's newest scrape, written as its observation
O_SUPERSEDED = "superseded"  # an older scrape of a node in the same request
O_STALE = "stale"            # the node's newest scrape is older than TELEMETRY_MAX_AGE_S (or up 0 and late)
O_TELEMETRY = "telemetry_only"  # older than the node's interval: stored as telemetry, not as an observation
O_TOO_OFTEN = "too_often"    # the node came sooner than a push may
O_REFUSED = "refused"        # the node's samples prove no live GPU (liveness rule) or break a limit
O_MARKER = "stale_marker"    # a staleness marker: the series ended
O_PARTIAL = "partial"        # part of a scrape whose rest (with its up) never came before a newer scrape


class RemoteWriteReceiver:
    """Receives, checks and hands on remote_write requests; one per app."""

    def __init__(self, *, auth: Authenticator, pool: AsyncConnectionPool, appendable: Appendable,
                 metrics: SelfMetrics, settings: CollectorSettings,
                 now: Callable[[], datetime] | None = None) -> None:
        self._auth = auth
        self._pool = pool
        self._appendable = appendable
        self._metrics = metrics
        self._max_bytes = settings.max_body_bytes
        self._max_decompressed = settings.max_decompressed_bytes
        self._deadline_s = settings.db_timeout_s
        self._cache_s = settings.token_cache_s
        self._parser = PayloadParser(max_series=settings.max_series_per_node,
                                     max_label_len=settings.max_label_len)
        self._limiter = PushRateLimiter(floor_s=settings.push_min_interval_s)
        self._series = SeriesTable(max_entries=CLASSIFY_CACHE_ENTRIES)
        # Per node, the first part of a scrape that straddles two requests:
        # (timestamp, entries, values, samples), until the rest arrives.
        self._parts: LruDict = LruDict(settings.push_cache_nodes)
        # operator_id -> ({node_id: interval_s}, expires at, monotonic)
        self._nodes: LruDict = LruDict(10_000)
        # Per node, what keeps its payload's layout between requests (the
        # parser's shared layouts are weakly held), bounded as a push's caches.
        self._caches: LruDict = LruDict(settings.push_cache_nodes)
        self._now = now or (lambda: datetime.now(timezone.utc))

    async def post(self, request: web.Request) -> web.Response:
        """The handler: 204 when the request was taken (see the module doc); a Rejected otherwise."""
        return await answered(self._receive(request, self._now()), self._metrics.remote_writes)

    async def _receive(self, request: web.Request, received_at: datetime) -> None:
        operator_id = await self._auth.operator(request)
        check_headers(request)
        body = await read_body(request, max_bytes=self._max_bytes, raw=True)
        raw = self._unsnappy(body)
        by_node, ups = self._decode(raw)
        intervals = await self._owned(operator_id, by_node.keys() | ups.keys())
        outcomes: dict[str, int] = {}
        batches, turns, merged = [], [], []
        received_ms = received_at.timestamp() * 1000.0
        try:
            for node_id in by_node.keys() | ups.keys():
                batch = self._node_batch(node_id, intervals[node_id], by_node.get(node_id),
                                         ups.get(node_id, []), received_at, received_ms, outcomes, merged)
                if batch is None:
                    continue
                if batch.telemetry_only:  # no observation, so not the node's turn (that is for liveness)
                    _add(outcomes, O_TELEMETRY, outcomes.pop("_pending", 0))
                    batches.append(batch)
                    continue
                try:
                    turns.append((node_id, self._limiter.acquire(node_id, intervals[node_id])))
                except Rejected:
                    _add(outcomes, O_TOO_OFTEN, outcomes.pop("_pending", 0))
                    continue
                _add(outcomes, O_WRITTEN, outcomes.pop("_pending", 0))
                batches.append(batch)
            if batches:
                await store(self._appendable, batches, what=f"a remote_write request of {len(batches)} batches")
        except BaseException:
            for node_id, previous in reversed(turns):
                self._limiter.release(node_id, previous)
            raise
        for node_id, held in merged:
            if self._parts.get(node_id) is held:  # (not a part held since)
                self._parts.pop(node_id)
        for outcome, count in outcomes.items():
            self._metrics.remote_write_samples.labels(outcome).inc(count)
        for batch in batches:
            if batch.payload is not None:
                for reason, count in batch.payload.rejects.items():
                    self._metrics.reject(reason, count)

    def _unsnappy(self, body: bytes) -> bytes:
        """The body inflated from snappy's block format, within the decompressed limit."""
        try:
            # The block format starts with the inflated length: checked before
            # any allocation, so a snappy bomb costs nothing.
            size = cramjam.snappy.decompress_raw_len(body)
        except cramjam.DecompressionError as exc:
            raise Rejected(400, R_BAD_SNAPPY, f"the body is not snappy (block format): {exc}") from None
        if size > self._max_decompressed:
            raise Rejected(413, R_DECOMPRESSED_TOO_LARGE,
                           f"the body inflates to more than {self._max_decompressed} bytes")
        try:
            return bytes(cramjam.snappy.decompress_raw(body))
        except cramjam.DecompressionError as exc:
            raise Rejected(400, R_BAD_SNAPPY, f"the body is not snappy (block format): {exc}") from None

    def _decode(self, raw: bytes) -> tuple[dict[int, tuple], dict[int, list]]:
        """The request's samples by node: ``{node: (entries, timestamps ms, values)}`` (NumPy arrays
        for the last two), and Prometheus' report series apart: ``{node: [(role, timestamp_ms, value), ...]}``.

        Hot path (bench/bench_remote_write.py, collector/series_table.py): a
        request that repeats series seen before in the same order (as a
        Prometheus shard sends them, cut anywhere) is recognised by comparing
        its bytes with theirs, values and timestamps left out; other series
        are split in one C call and read together in NumPy and C-level passes,
        their labels' bytes the key, classified once per series. Anything
        else (several samples, other encodings) takes the message objects
        (``_slow_series``). Exact: a key is classified only once its bytes
        are proven to be whole labels and nothing else, and protobuf's parse
        of "whole labels, then one whole sample" is unique.
        """
        by_node, ups, other = self._series.read(raw, self._classify_key, _series_of)
        if other:
            rows: dict[int, list] = {}
            for s in other:
                self._slow_series(s, rows, ups)
            for node_id, node_rows in rows.items():
                entries, times, xs = (list(c) for c in zip(*node_rows))
                if node_id in by_node:
                    fast_entries, fast_times, fast_xs = by_node[node_id]
                    entries = fast_entries + entries
                    times = np.concatenate([fast_times, np.array(times, np.int64)])
                    xs = np.concatenate([fast_xs, np.array(xs, np.float64)])
                by_node[node_id] = (entries, np.array(times, np.int64), np.array(xs, np.float64))
        return by_node, ups

    def _slow_series(self, s: bytes, by_node: dict[int, list], ups: dict[int, list]) -> None:
        """One series through protobuf's message objects: any number of samples, any encoding."""
        try:
            ts = TimeSeries.FromString(s)
        except DecodeError as exc:
            raise Rejected(400, R_BAD_PROTOBUF, f"a series is not a remote_write TimeSeries: {exc}") from None
        node_id, entry, role = self._classify([(label.name, label.value) for label in ts.labels])
        for sample in ts.samples:
            if role:
                ups.setdefault(node_id, []).append((role, sample.timestamp, sample.value))
            else:
                by_node.setdefault(node_id, []).append((entry, sample.timestamp, sample.value))

    def _classify_key(self, key: bytes) -> tuple[int, mn.Entry | None, int] | None:
        """Classify the series whose labels are encoded as ``key``; None if ``key`` is not only labels."""
        try:
            ts = TimeSeries.FromString(key)
        except DecodeError:
            return None
        if ts.samples or ts.SerializeToString() != key:
            return None  # not whole labels in the canonical encoding: the slow path decides
        return self._classify([(label.name, label.value) for label in ts.labels])

    def _classify(self, pairs: list[tuple[str, str]]) -> tuple[int, mn.Entry | None, int]:
        """(node_id, the series' Entry or None, its REPORT_SERIES role or 0); 400 without a valid node label."""
        labels = dict(pairs)
        node_label = labels.pop(NODE_LABEL, None)
        name = labels.pop("__name__", "")
        if node_label is None:
            raise Rejected(400, R_NO_NODE_LABEL, f"series {name!r} has no {NODE_LABEL} label: relabel every "
                           "series of a node with its node_id (docs/prometheus.md)")
        if not (node_label.isascii() and node_label.isdigit() and len(node_label) <= MAX_NODE_ID_DIGITS):
            raise Rejected(400, R_BAD_NODE_LABEL, f"{NODE_LABEL}={node_label[:40]!r} is not a node_id")
        role = REPORT_SERIES.get(name, 0)
        entry = None if role else mn.classify(name, labels, max_label_len=self._parser.max_label_len)
        return int(node_label), entry, role

    async def _owned(self, operator_id: int, node_ids) -> dict[int, int]:  # type: ignore[no-untyped-def]
        """The interval of each node in ``node_ids``; 403 if any is not the operator's."""
        loop = asyncio.get_running_loop()
        cached = self._nodes.get(operator_id)
        if cached is None or cached[1] < loop.time() or not cached[0].keys() >= node_ids:
            async def query() -> dict[int, int]:
                async with self._pool.connection() as conn:
                    rows = await (await conn.execute(OPERATOR_NODES_SQL, (operator_id,))).fetchall()
                return dict(rows)
            nodes = await within_deadline(query(), self._deadline_s)
            cached = (nodes, loop.time() + self._cache_s)
            self._nodes.put(operator_id, cached)
        nodes = cached[0]
        foreign = sorted(n for n in node_ids if n not in nodes)
        if foreign:
            raise Rejected(403, R_NOT_YOUR_NODE, f"{NODE_LABEL}={foreign[0]} is not a node of this operator; "
                           "nothing of this request was written")
        return nodes

    def _node_batch(self, node_id: int, interval_s: int, columns: tuple | None, ups: list, received_at: datetime,
                    received_ms: float, outcomes: dict[str, int], merged: list[tuple]) -> Batch | None:
        """One node's Batch from its newest whole scrape in the request, or None (see the module doc).

        A scrape straddling two requests (remote_write cuts requests by sample
        count, not by target) is written whole: the part of the newest scrape
        that lacks the scrape's ``up`` (Prometheus' report follows a scrape's
        samples) is held (``_parts``) and joined with the rest when it comes,
        so a part never makes an observation of fewer GPUs than the node has
        (it would turn the others offline and read as a changed GPU set). The
        samples the batch would hold are left under ``outcomes["_pending"]``
        for the caller, who knows whether the node's turn is free; the nodes
        whose held part was used or dropped are added to ``merged``.
        """
        # Scrapes by timestamp: [entries, values, samples]; usually just one.
        scrapes: dict[int, list] = {}
        markers = 0
        if columns is not None and columns[0]:
            entries, times, xs = columns
            if times.min() == times.max() and not np.isnan(xs).any():
                scrapes[int(times[0])] = [entries, xs.tolist(), len(entries)]
            else:  # several scrapes, or NaNs (staleness markers among them): sample by sample
                for entry, t, x in zip(entries, times.tolist(), xs.tolist()):
                    if x != x and is_stale_marker(x):
                        markers += 1
                        continue
                    scrape = scrapes.setdefault(t, [[], [], 0])
                    scrape[0].append(entry)
                    scrape[1].append(x)
                    scrape[2] += 1
        ended: dict[int, float] = {}  # timestamp -> up
        for role, t, x in ups:
            if x != x and is_stale_marker(x):
                markers += 1
                continue
            scrape = scrapes.setdefault(t, [[], [], 0])
            scrape[2] += 1
            if role == ROLE_UP:
                ended[t] = x
        _add(outcomes, O_MARKER, markers)
        held = self._parts.get(node_id)
        if held is not None:
            merged.append((node_id, held))  # forgotten once this request is through (kept if storage fails)
            scrape = scrapes.get(held[0])
            if scrape is not None:
                scrape[0], scrape[1], scrape[2] = held[1] + scrape[0], held[2] + scrape[1], held[3] + scrape[2]
            else:
                _add(outcomes, O_PARTIAL, held[3])
        if not scrapes:
            return None
        newest = max(scrapes)
        done = max(ended) if ended else None
        if newest not in ended:
            # The newest scrape's end is still to come: held for the next request.
            entries, xs, used = scrapes.pop(newest)
            self._parts.put(node_id, (newest, entries, xs, used))
            if held is not None and held[0] == newest:
                merged.remove((node_id, held))
        if done is None:
            _add(outcomes, O_SUPERSEDED, sum(scrape[2] for scrape in scrapes.values()))
            return None
        entries, xs, used = scrapes.pop(done)
        _add(outcomes, O_SUPERSEDED, sum(scrape[2] for scrape in scrapes.values()))
        late = received_ms - done > interval_s * 1000.0
        if late and (received_ms - done > TELEMETRY_MAX_AGE_S * 1000.0 or ended[done] == 0.0 or not entries):
            _add(outcomes, O_STALE, used)
            return None
        slot = slot_of(received_at, interval_s)
        if ended[done] == 0.0:  # (never late: a late up 0 is stale, above)
            outcomes["_pending"] = used
            return Batch(node_id=node_id, received_at=received_at, slot=slot, source="push", ok=False,
                         error="up 0: the sender's Prometheus could not scrape the node's exporter")
        if not entries:
            _add(outcomes, O_REFUSED, used)  # up alone: no GPU, nothing to observe
            return None
        payload = self._payload(node_id, entries, xs)
        if isinstance(payload, str):
            self._metrics.reject(payload)
            _add(outcomes, O_REFUSED, used)
            return None
        outcomes["_pending"] = used
        if late:  # telemetry only, at the sender's time: never an observation (no uptime backfill)
            at = datetime.fromtimestamp(done / 1000.0, timezone.utc)
            return Batch(node_id=node_id, received_at=at, slot=slot_of(at, interval_s), source="push", ok=True,
                         payload=payload, telemetry_only=True)
        return Batch(node_id=node_id, received_at=received_at, slot=slot, source="push", ok=True,
                     payload=payload)

    def _payload(self, node_id: int, entries: list[mn.Entry], xs: list[float]) -> ParsedPayload | str:
        """The node's ParsedPayload, or the reason it is refused."""
        try:
            payload = self._parser.from_entries(entries, xs, path="remote_write",
                                                cache=self._caches.use(node_id, SeriesCache))
        except ParseError as err:
            return err.reason or R_TOO_MANY_SERIES
        refused = liveness.refusal(payload)
        if refused is not None:
            return refused[0]
        return payload



def _series_of(raw: bytes) -> list[bytes]:
    """The encoded series of the WriteRequest ``raw``; 400 if it is not one."""
    try:
        return RawWriteRequest.FromString(raw).timeseries
    except DecodeError as exc:
        raise Rejected(400, R_BAD_PROTOBUF, f"the body is not a remote_write WriteRequest: {exc}") from None


def _add(outcomes: dict[str, int], outcome: str, count: int) -> None:
    if count:
        outcomes[outcome] = outcomes.get(outcome, 0) + count
