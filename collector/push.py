"""The push receiver: ``POST /api/v1/push`` from hosts behind NAT.

One accepted push is one ``Batch`` (collector/ingest.py) for the node whose
token signed it, stamped with the collector's receive time, never a time the
host claims (DESIGN.md: a host cannot backfill its own uptime), appended and
committed through the storage ``Appendable`` like a scrape. The order of
checks is the order of cost: the token (401), the encoding (415), the node's
turn (429), the size as it streams in (413), the parse (400, or 413 for too
many series), then the liveness rule (400: collector/liveness.py). Anything
refused writes nothing.

Each node keeps its own ``SeriesCache``, as a scrape target does, so the
steady state of an exporter pushing the same shape every interval takes the
parser's warm path; the caches live in an LRU bounded by
``push_cache_nodes``. The rate limiter holds a node's turn while its push is
in progress, which is also what guarantees that a node's cache is used by one
parse at a time.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from aiohttp import web

from collector import liveness
from collector.ingest import Batch, answered, store
from collector.lru import LruDict
from collector.ratelimit import PushRateLimiter
from collector.requests import Rejected, content_encoding, read_body
from collector.parse import R_TOO_MANY_SERIES, R_UNPARSABLE, ParseError, PayloadParser, SeriesCache
from fleetscope.uptime import slot_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from collector.auth import Authenticator
    from collector.ingest import Appendable
    from collector.parse import ParsedPayload
    from collector.selfmetrics import SelfMetrics
    from collector.settings import CollectorSettings

log = logging.getLogger(__name__)

# Bodies above this are parsed in a worker thread: a cold parse costs ~1 us
# per byte, so 256 KiB is ~0.25 ms of event loop at most when inline, and a
# 16 MiB body could otherwise stall every other request for a while.
PARSE_INLINE_MAX_BYTES = 256 * 2**10
# Reason counted when the parser fails in a way it should not (a bug): the
# node still gets a 400, never a 5xx, and the log has the traceback.
R_PARSER_ERROR = "parser_error"


class PushReceiver:
    """Receives, checks, parses and hands on pushes; one per app."""

    def __init__(self, *, auth: Authenticator, appendable: Appendable, metrics: SelfMetrics,
                 settings: CollectorSettings, now: Callable[[], datetime] | None = None) -> None:
        self._auth = auth
        self._appendable = appendable
        self._metrics = metrics
        self._max_bytes = settings.max_body_bytes
        self._max_decompressed = settings.max_decompressed_bytes
        self._parser = PayloadParser(max_series=settings.max_series_per_node,
                                     max_label_len=settings.max_label_len)
        self._caches: LruDict = LruDict(settings.push_cache_nodes)
        self._limiter = PushRateLimiter(floor_s=settings.push_min_interval_s)
        self._now = now or (lambda: datetime.now(timezone.utc))

    async def post(self, request: web.Request) -> web.Response:
        """The handler: 204 when accepted; a Rejected (see module doc) otherwise."""
        return await answered(self._receive(request, self._now()), self._metrics.pushes)

    async def _receive(self, request: web.Request, received_at: datetime) -> None:
        node = await self._auth.node(request)
        content_encoding(request)  # 415 before the node's turn is taken
        previous = self._limiter.acquire(node.node_id, node.interval_s)
        try:
            body = await read_body(request, max_bytes=self._max_bytes, max_decompressed=self._max_decompressed)
            payload = await self._parse(node.node_id, body, request.headers.get("Content-Type"))
            refused = liveness.refusal(payload)
            if refused is not None:  # issue 15: a push that proves no live GPU is no observation
                raise Rejected(400, refused[0], f"the payload was refused: {refused[1]}")
            batch = Batch(node_id=node.node_id, received_at=received_at, slot=slot_of(received_at, node.interval_s),
                          source="push", ok=True, latency_ms=None, payload=payload)
            await store(self._appendable, [batch], what=f"a push batch for node {node.node_id}")
        except BaseException:
            self._limiter.release(node.node_id, previous)
            raise
        for reason, count in payload.rejects.items():
            self._metrics.reject(reason, count)
        self._metrics.parse_paths.labels(payload.path).inc()

    async def _parse(self, node_id: int, body: bytes, content_type: str | None) -> ParsedPayload:
        cache = self._caches.use(node_id, SeriesCache)
        try:
            if len(body) > PARSE_INLINE_MAX_BYTES:
                return await asyncio.to_thread(self._parser.parse, body, content_type=content_type, cache=cache)
            return self._parser.parse(body, content_type=content_type, cache=cache)
        except ParseError as err:
            status = 413 if err.reason == R_TOO_MANY_SERIES else 400
            raise Rejected(status, err.reason or R_UNPARSABLE, f"the payload was refused: {err}") from None
        except Exception:
            log.exception("the parser failed on a push from node %s", node_id)
            cache.clear()  # whatever state it left is suspect
            raise Rejected(400, R_PARSER_ERROR, "the payload could not be parsed") from None
