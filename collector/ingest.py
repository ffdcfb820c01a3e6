"""What the scraper and the push receiver hand to storage, and how.

As Prometheus' scrape manager knows storage only through
``storage.Appendable``, the scraper and the push receiver know it only through
an ``Appender``: ``append()`` the batches of one unit of work, then
``commit()`` them (or ``rollback()``), once, from one task. Production's
appender routes each batch into the bounded queue of its node's writer
(collector/writer.py); tests may use ``MemoryAppender`` or the real writer,
never a mock that asserts calls.

``store`` is what the push and remote_write receivers do with what they
accepted (append, commit, wait until written or spooled, 503 if storage
cannot take it), and ``answered`` their 204 and request counting.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from collector.requests import R_STORAGE_UNAVAILABLE, Rejected

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    from prometheus_client import Counter

    from collector.parse import ParsedPayload

SOURCES = ("push", "scrape")
# A storage failure (the writer's queue closed, the spool full) is ours, not
# the sender's: 503 and a hint to come back shortly (Prometheus' remote_write
# backs off on its own too).
STORAGE_RETRY_AFTER_S = 5

log = logging.getLogger(__name__)


class StorageBusy(Exception):
    """Storage cannot take (or keep) the batches now: the caller should answer 503 and let the sender retry."""


@dataclass(frozen=True, slots=True)
class Batch:
    """What one scrape attempt or one accepted push produced for one node.

    ``received_at`` is the collector's receive time, the only time that counts
    for liveness (DESIGN.md: a host cannot backfill its own uptime); ``slot``
    is its cell on the node's uptime grid, floor(epoch / interval_s).
    A failed attempt has ``ok`` False, an ``error`` and no payload.
    """

    node_id: int
    received_at: datetime
    slot: int
    source: str
    ok: bool
    latency_ms: float | None = None
    error: str | None = None
    payload: ParsedPayload | None = None
    # Telemetry only: GPU samples with no observation, identity or GPU set,
    # stamped ``received_at`` = the sender's own sample time. For remote_write
    # scrapes too old to count as liveness (collector/remote_write.py): a
    # sender may deliver telemetry late, never uptime.
    telemetry_only: bool = False

    @property
    def healthy_gpus(self) -> list[str]:
        """UUIDs reported in this observation without a lost flag, in payload order."""
        if not self.ok or self.payload is None:
            return []
        return [s.gpu_uuid for s in self.payload.samples if not s.lost]

    @property
    def lost_gpus(self) -> list[str]:
        if not self.ok or self.payload is None:
            return []
        return sorted(self.payload.lost)


class Appender(Protocol):
    """One unit of work's batches, committed or rolled back once."""

    def append(self, batch: Batch) -> None: ...

    async def commit(self) -> None:
        """Hand the appended batches on. May wait while the writer's queue is full (backpressure)."""

    def rollback(self) -> None: ...

    async def settled(self) -> None:
        """Return once the committed batches are safe (written, or spooled on disk); raise if they cannot be.

        A push is answered 204 only after this (issue 15). Optional to call.
        """


class Appendable(Protocol):
    def appender(self) -> Appender: ...


@dataclass
class MemoryAppendable:
    """Keeps committed batches in a list: for tests and the simulator's dry runs."""

    committed: list[Batch] = field(default_factory=list)

    def appender(self) -> Appender:
        return _MemoryAppender(self)


@dataclass
class _MemoryAppender:
    target: MemoryAppendable
    pending: list[Batch] = field(default_factory=list)
    done: bool = False

    def append(self, batch: Batch) -> None:
        if self.done:
            raise RuntimeError("append after commit or rollback")
        self.pending.append(batch)

    async def commit(self) -> None:
        if self.done:
            raise RuntimeError("commit after commit or rollback")
        self.target.committed.extend(self.pending)
        self.done = True

    def rollback(self) -> None:
        self.pending.clear()
        self.done = True

    async def settled(self) -> None:
        """Committed batches are in the list: nothing to wait for."""


async def store(appendable: Appendable, batches: Sequence[Batch], *, what: str) -> None:
    """Hand ``batches`` to storage as one unit and wait until they are written or spooled (issue 15: a 204 means
    safe, not queued); a Rejected 503 with Retry-After if storage cannot take them (``what`` names them in the log).

    What a push and a remote_write request both do with what they accepted.
    """
    appender = appendable.appender()
    try:
        for batch in batches:
            appender.append(batch)
        await appender.commit()
        await appender.settled()
    except asyncio.CancelledError:
        appender.rollback()
        raise
    except Exception:
        log.exception("storage refused %s", what)
        try:
            appender.rollback()
        except Exception:  # already committed or closed: nothing left to undo
            pass
        raise Rejected(503, R_STORAGE_UNAVAILABLE, "storage is unavailable; retry later",
                       headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)}) from None


async def answered(work: Awaitable[None], counter: Counter) -> web.Response:
    """204 once ``work`` (receiving a push or a remote_write request) is done; each request counted by ``counter``
    as accepted, rejected (a 4xx Rejected) or error (a 5xx, or anything else, which propagates)."""
    try:
        await work
    except Rejected as rejected:
        counter.labels("error" if rejected.status >= 500 else "rejected").inc()
        raise
    except BaseException:
        counter.labels("error").inc()
        raise
    counter.labels("accepted").inc()
    return web.Response(status=204)
