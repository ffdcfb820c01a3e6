"""The writer: parse -> a bounded queue per node bucket -> one writer per connection, writing with COPY.

The scraper and the push receiver commit ``Batch``es through an appender
(collector/ingest.py: ``append``, ``commit``, ``settled``, ``rollback``).
``commit`` routes each batch by its node's bucket, ``node_id % connections``,
into that bucket's writer's bounded ``asyncio.Queue`` (backpressure: a full
queue makes ``commit`` wait, and after COMMIT_TIMEOUT_S raise ``StorageBusy``,
which the push receiver turns into a 503). Each bucket writer
(collector/bucket_writer.py) is a plain loop on its own connection: collect,
build a group, write it in one transaction with binary COPY (or spool it),
answer its pushes, replay its spool. A node's rows therefore stay on one
connection, in order, by construction, and its caches (collector/builder.py)
are that writer's alone; one writer held up or refused never stops another.

The heartbeat is its own small task: every HEARTBEAT_S it hands each writer
the collector's beat (observing since, still observing at), which that
writer's next group writes (alone if no batch comes), and a gap of more than
HEARTBEAT_GAP_S between beats starts a new observing period. Nodes' intervals
are >= 5 s, so every slot of every node holds a beat while we observe.

Delivery is at-least-once with de-duplication: a group whose id is already in
``ingest_batches`` is skipped whole, so a retry after a lost COMMIT
acknowledgement, or a replay from the spool, never writes rows twice. When
the database is unreachable, groups go to the on-disk spool (collector/spool.py)
in order, and once it is back each writer replays its own spooled groups,
oldest first, before any new group of its bucket: nothing accepted is lost.
A push's commit is answered (``settled``) once its batch is written or
spooled and fsync'd.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.bucket_writer import (
    CONNECT_TIMEOUT_S,
    EARLY_FLUSH_BATCHES,
    FLUSH_INTERVAL_S,
    MAX_GROUP_BATCHES,
    WRITE_DEADLINE_S,
    BucketWriter,
    Entry,
    close_quietly,
)
from collector.group import Beat, Group
from collector.ingest import StorageBusy
from collector.spool import Spool

if TYPE_CHECKING:
    from collector.ingest import Appender, Batch

__all__ = ["StorageBusy", "Writer"]

# Writers, each with its own connection and node bucket. One COPY is bound by
# its one database backend, and each writer's connection waits while that
# writer builds its next group (its loop is sequential: about half the time
# under load, bench/bench_writer_cpu.py). Four writers took 1.07x the rows/s
# of the two pipelined connections before them, where two took 0.84x
# (bench/bench_writer_ab.py; docs/benchmarks.md, "Bucket writers").
WRITE_CONNECTIONS = 4
QUEUE_BATCHES = 5_000           # per writer: together ~ 1.3 intervals of 10,000 nodes at 15 s
HEARTBEAT_S = 2.0
HEARTBEAT_GAP_S = 3 * HEARTBEAT_S
COMMIT_TIMEOUT_S = 5.0          # how long a commit may wait on a full queue
SPOOL_MAX_BYTES = 4 * 2**30     # ~ hours of a 10,000-node fleet's telemetry
# Closing connections at shutdown: psycopg's close of a connection whose
# server is frozen is not waited for past this (the process is ending).
CLOSE_CONNECTIONS_S = 0.5
# A push's commit waits at most this long for its batch to be written or
# spooled (issue 15: a 204 means the data is safe); past it the push is a 503.
ACK_TIMEOUT_S = COMMIT_TIMEOUT_S + WRITE_DEADLINE_S + CONNECT_TIMEOUT_S + 5.0


class Writer:
    """The only writer of telemetry and liveness. Use as ``async with Writer(...) as writer``."""

    def __init__(self, dsn: str, *, spool_dir: Path, collector_id: str, mode: str,
                 registry: CollectorRegistry | None = None, queue_batches: int = QUEUE_BATCHES,
                 max_group_batches: int = MAX_GROUP_BATCHES, flush_interval_s: float = FLUSH_INTERVAL_S,
                 heartbeat_s: float = HEARTBEAT_S, spool_max_bytes: int = SPOOL_MAX_BYTES,
                 commit_timeout_s: float = COMMIT_TIMEOUT_S,
                 early_flush_batches: int = EARLY_FLUSH_BATCHES, connections: int = WRITE_CONNECTIONS) -> None:
        if connections < 1:
            raise ValueError("the writer needs at least one connection")
        self.dsn = dsn
        self.collector_id = collector_id
        self.mode = mode
        self.spool = Spool(spool_dir, max_bytes=spool_max_bytes, owners=connections)
        self.max_group_batches = max_group_batches
        self.flush_interval_s = flush_interval_s
        self.early_flush_batches = early_flush_batches
        self.heartbeat_s = heartbeat_s
        self.commit_timeout_s = commit_timeout_s
        self.boot = f"{collector_id}:{time.time_ns()}"  # group ids: <boot>:w<writer>:<sequence>
        self.writers = [BucketWriter(self, i, queue_batches=queue_batches) for i in range(connections)]
        self._tasks: list[asyncio.Task] = []
        self._heartbeat: asyncio.Task | None = None
        self._close_called = asyncio.Event()
        # Set once the writer stops waiting on the database (``give_up_database``,
        # at shutdown: issue 15, item 3): what is in flight and what comes
        # next is spooled, and the database is not asked again.
        self._given_up = asyncio.Event()
        self._give_up_timer: asyncio.TimerHandle | None = None
        self._register_metrics(registry or CollectorRegistry())

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Writer:
        # Connect first (loads each bucket's GPU sets); a database that is down is retried later.
        await asyncio.gather(*(w.ensure_connection() for w in self.writers))
        self._tasks = [asyncio.create_task(w.run(), name=f"fleetscope-writer-{w.index}") for w in self.writers]
        self._heartbeat = asyncio.create_task(self._beat(), name="fleetscope-writer-heartbeat")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Write (or spool) everything queued, then stop.

        After ``give_up_database`` this is bounded: what the database has not
        taken by then is spooled, and connections are not waited for.
        """
        self._close_called.set()
        try:
            if self._heartbeat is not None:
                await self._heartbeat  # (its last beat handed to every writer: the period ends where we stop)
            for w in self.writers:
                w.close_soon()
            if self._tasks:
                # Shielded: a cancelled close must not cancel a group's writing
                # midway (its worker thread would go on with the connection
                # that is then closed).
                await asyncio.shield(asyncio.gather(*self._tasks))
        finally:
            self._tasks, self._heartbeat = [], None
            conns = [w.conn for w in self.writers if w.conn is not None]
            for w in self.writers:
                w.conn = None
            if conns:
                closing = asyncio.ensure_future(asyncio.gather(*(asyncio.to_thread(close_quietly, c) for c in conns)))
                if self._given_up.is_set() or self._give_up_timer is not None:
                    # Shutting down: a frozen server's connection is abandoned, not waited for.
                    await asyncio.wait({closing}, timeout=CLOSE_CONNECTIONS_S)
                else:
                    await closing
            if self._give_up_timer is not None:
                self._give_up_timer.cancel()

    def give_up_database(self, within_s: float) -> None:
        """Stop waiting on the database ``within_s`` from now (the collector's shutdown, issue 15, item 3).

        Until then groups are written as usual; from then on a write still
        running is abandoned (its connection closed, so the server rolls it
        back) and spooled, and every later group goes straight to the spool,
        fsync'd: the pushes waiting for their groups are answered and
        ``close`` ends without the database. The earliest call wins.
        """
        if self._given_up.is_set() or self._give_up_timer is not None:
            return
        if within_s <= 0:
            self._given_up.set()
        else:
            self._give_up_timer = asyncio.get_running_loop().call_later(within_s, self._given_up.set)

    def seconds_until_given_up(self) -> float:
        """How long until the writer gives up on the database (0: it has; inf: it was not told to)."""
        if self._given_up.is_set():
            return 0.0
        if self._give_up_timer is None:
            return float("inf")
        return max(0.0, self._give_up_timer.when() - asyncio.get_running_loop().time())

    @property
    def given_up(self) -> bool:
        return self._given_up.is_set()

    async def until_given_up(self, work: Any, seconds: float | None) -> Any:
        """``work``'s result; TimeoutError after ``seconds`` (None: no limit) or once the writer gives up
        on the database, whichever is first. ``work`` is left running (a thread cannot be stopped)."""
        work = asyncio.ensure_future(work)
        if not work.done() and not self._given_up.is_set():
            giving_up = asyncio.ensure_future(self._given_up.wait())
            try:
                await asyncio.wait((work, giving_up), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                giving_up.cancel()
        if work.done():
            return work.result()
        work.add_done_callback(lambda f: f.cancelled() or f.exception())  # (retrieved: abandoned)
        raise TimeoutError

    def appender(self) -> Appender:
        return _QueueAppender(self)

    @property
    def database_up(self) -> bool:
        """Whether every bucket writer is connected."""
        return all(w.connected for w in self.writers)

    def writer_of(self, node_id: int) -> BucketWriter:
        """The writer of a node's bucket: all its batches go there."""
        return self.writers[node_id % len(self.writers)]

    # -- the heartbeat ----------------------------------------------------------------

    async def _beat(self) -> None:
        period_start: datetime | None = None
        last: datetime | None = None
        while True:
            now = datetime.now(timezone.utc)
            if last is None or (now - last).total_seconds() > HEARTBEAT_GAP_S:
                period_start = now
            last = now
            beat = Beat(period_start, now)
            for w in self.writers:
                w.beat(beat)
            if self._close_called.is_set():
                return  # (that was the last beat)
            try:
                await asyncio.wait_for(self._close_called.wait(), timeout=self.heartbeat_s)
            except (asyncio.TimeoutError, TimeoutError):
                pass

    # -- metrics --------------------------------------------------------------------

    def count(self, result: str) -> None:
        """Count a group (or one node's part of one) by its outcome."""
        self._m_groups.labels(result).inc()

    def written(self, group: Group, seconds: float) -> None:
        self._m_rows.labels("observations").inc(len(group.observations))
        self._m_rows.labels("gpu_samples").inc(group.sample_count)
        self._m_groups.labels("written").inc()
        self._m_flush.observe(seconds)

    def _register_metrics(self, registry: CollectorRegistry) -> None:
        depth = Gauge("fleetscope_writer_queue_batches", "Batches waiting in the writers' queues", registry=registry)
        depth.set_function(lambda: sum(w.queue.qsize() for w in self.writers))
        spool_groups = Gauge("fleetscope_writer_spool_groups", "Write groups waiting in the on-disk spool",
                             registry=registry)
        spool_groups.set_function(lambda: len(self.spool))
        spool_bytes = Gauge("fleetscope_writer_spool_bytes", "Size of the on-disk spool", registry=registry)
        spool_bytes.set_function(lambda: self.spool.size_bytes)
        db_up = Gauge("fleetscope_writer_database_up", "1 while every writer is connected", registry=registry)
        db_up.set_function(lambda: int(self.database_up))
        self._m_rows = Counter("fleetscope_writer_rows_written", "Rows written, by table", ["table"],
                               registry=registry)
        self._m_groups = Counter("fleetscope_writer_groups", "Write groups by outcome: written, spooled, replayed,"
                                 " duplicate (already written, skipped), split (refused whole, then written node"
                                 " by node), rejected (a group, or one node's part of a split group, kept in"
                                 " spool/rejected),"
                                 " lost (could be neither written nor spooled: see the log)",
                                 ["result"], registry=registry)
        self._m_flush = Histogram("fleetscope_writer_flush_seconds", "Time to write one group",
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry)
        self._m_busy = Counter("fleetscope_writer_busy", "Commits refused because the queue stayed full",
                               registry=registry)


class _QueueAppender:
    """Appends batches of one unit of work, then puts each in its node's writer's queue."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._pending: list[Batch] = []
        self._waiting: list[asyncio.Future] = []
        self._done = False

    def append(self, batch: Batch) -> None:
        if self._done:
            raise RuntimeError("append after commit or rollback")
        self._pending.append(batch)

    async def commit(self) -> None:
        if self._done:
            raise RuntimeError("commit after commit or rollback")
        self._done = True
        writer = self._writer
        if writer.spool.full and not writer.database_up:
            # The database is away and the spool holds SPOOL_MAX_BYTES: refuse
            # rather than accept what could not be kept (the sender retries).
            writer._m_busy.inc()
            raise StorageBusy("the database is unreachable and the writer's spool is full")
        loop = asyncio.get_running_loop()
        for batch in self._pending:
            # Its group's settlement, for `settled` (issue 15).
            fut = loop.create_future()
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # (retrieved: awaiting is optional)
            entry = Entry(batch, fut)
            queue = writer.writer_of(batch.node_id).queue
            try:
                queue.put_nowait(entry)
            except asyncio.QueueFull:
                try:
                    await asyncio.wait_for(queue.put(entry), timeout=writer.commit_timeout_s)
                except (asyncio.TimeoutError, TimeoutError):
                    writer._m_busy.inc()
                    raise StorageBusy("the writer's queue stayed full") from None
            self._waiting.append(fut)

    async def settled(self) -> None:
        """Return once the committed batches are written or spooled (fsync'd); StorageBusy if they cannot be.

        The push receiver answers 204 only after this (issue 15, DESIGN.md
        "Trust boundaries"); the scraper does not wait, so that a scrape does
        not hold its concurrency slot for a write.
        """
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                await asyncio.gather(*(asyncio.shield(f) for f in self._waiting))
        except TimeoutError:
            self._writer._m_busy.inc()
            raise StorageBusy("the batch was not written or spooled in time") from None

    def rollback(self) -> None:
        self._pending.clear()
        self._done = True
