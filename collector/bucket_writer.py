"""One bucket writer: the nodes of one bucket, one connection, one plain loop.

The writer (collector/writer.py) routes each batch, when it is committed, to
the bucket writer of its node (``node_id % writers``), into that writer's own
bounded queue. A bucket writer then does, in turn and nothing else:

1. collect: wait for a batch, a heartbeat or the close, then gather for up to
   FLUSH_INTERVAL_S (at once when EARLY_FLUSH_BATCHES are there), at most
   MAX_GROUP_BATCHES;
2. build: one ``Group`` (collector/builder.py, with this writer's caches);
3. write it in one transaction on its connection (collector/group.py), or,
   when the database is away or this writer has groups in the spool, spool it
   (fsync'd); a refused group is spooled and then written node by node, the
   refused nodes' rows kept in ``spool/rejected``;
4. settle: the pushes waiting for the group's batches are answered;
5. replay up to DRAIN_GROUPS_PER_ROUND of its spooled groups, oldest first.

A node's rows are written by one writer, in order, so no two connections
ever hold the same node's rows; a writer whose connection is held up (a lock,
a hung server) or whose group is refused holds up only its own bucket. Two
writers on two connections took 1.2-1.5x the rows/s of one COPY on 2 cores
(one COPY is bound by its one database backend; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, NamedTuple

import psycopg

from collector.builder import GroupBuilder
from collector.group import Beat, Group, aborted, split_by_node, write_group
from collector.ingest import StorageBusy
from collector.spool import from_spool, to_spool

if TYPE_CHECKING:
    from collector.ingest import Batch
    from collector.writer import Writer

log = logging.getLogger("fleetscope.writer")

MAX_GROUP_BATCHES = 2_000       # ~ 16,000 GPU sample rows: one COPY of a few ms
FLUSH_INTERVAL_S = 0.25         # how long a batch may wait for company
# ... unless this many are there already: a burst's tail is then written at
# once instead of waiting out the interval, while a steady trickle still
# gathers into few transactions (each costs a commit and the de-dup row).
EARLY_FLUSH_BATCHES = 250
RETRY_MIN_S, RETRY_MAX_S = 0.5, 15.0  # reconnect backoff while the database is away
DRAIN_GROUPS_PER_ROUND = 20     # spool replay yields to new work and heartbeats in between
CONNECT_TIMEOUT_S = 5
# A group's write that has not finished within this makes the writer ask, on a
# new connection, whether the database still answers (PROBE_TIMEOUT_S). If it
# does, the write is only waiting (a lock) and is waited for again; if not,
# the database is hung (issue 15: frozen, it must send new data to the spool,
# not into memory without bound): the write is given up and spooled, its
# connection closed so that the server rolls the transaction back, and the
# spooled copy is written exactly once. A group of MAX_GROUP_BATCHES takes
# well under a second.
WRITE_DEADLINE_S = 5.0
PROBE_TIMEOUT_S = 2  # libpq's smallest connect_timeout


class Entry(NamedTuple):
    """A committed batch in a writer's queue, and the future its committer may wait on (``settled``)."""

    batch: Batch
    settled: asyncio.Future


class BucketWriter:
    """Writes the batches of the nodes with ``node_id % writers == index``, on its own connection."""

    def __init__(self, writer: Writer, index: int, *, queue_batches: int) -> None:
        self.writer = writer  # the settings, the spool, the metrics and the shutdown it shares with the others
        self.index = index
        self.queue: asyncio.Queue[Entry] = asyncio.Queue(maxsize=queue_batches)
        self.builder = GroupBuilder(writer.collector_id)
        self.conn: psycopg.Connection | None = None
        self._seq = 0
        self._beat: Beat | None = None  # the heartbeat's latest, for the next group
        self._wake = asyncio.Event()  # a beat, or the close
        self._closing = False
        self._final_try = False  # the reconnect on close that ignores the backoff (_drain_spool)
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN_S

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def beat(self, beat: Beat) -> None:
        """The heartbeat: the next group carries it (a group of it alone if no batch comes)."""
        self._beat = beat
        self._wake.set()

    def close_soon(self) -> None:
        """Write (or spool) what is queued, replay the spool if the database takes it, then end ``run``."""
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        spool = self.writer.spool
        while True:
            entries = await self._collect()
            beat, self._beat = self._beat, None
            if entries or beat is not None:
                await self._store(entries, beat)
            if spool.pending(self.index):
                await self._drain_spool()
            if self._closing and self.queue.empty() and self._beat is None:
                return

    # -- collect ------------------------------------------------------------------

    async def _collect(self) -> list[Entry]:
        """Wait for the first entry (or a beat, the close, a replay that is due), then gather for a while."""
        queue, entries = self.queue, []
        if not self._closing and queue.empty() and self._beat is None:
            self._wake.clear()
            getter = asyncio.ensure_future(queue.get())
            waking = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((getter, waking), timeout=self._replay_due_in(),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waking.cancel()
                if not getter.done():
                    getter.cancel()  # a cancelled get() leaves its item in the queue
            if getter.done() and not getter.cancelled():
                entries.append(getter.result())
        limit = self.writer.max_group_batches
        deadline = time.monotonic() + self.writer.flush_interval_s
        while len(entries) < limit:
            try:
                entries.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if (not entries or remaining <= 0 or self._closing
                    or len(entries) >= self.writer.early_flush_batches):
                break
            try:
                entries.append(await asyncio.wait_for(queue.get(), timeout=remaining))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return entries

    def _replay_due_in(self) -> float | None:
        """How long until spooled groups may be replayed (None: none to replay, wait for work)."""
        if not self.writer.spool.pending(self.index) or self.writer.given_up:
            return None
        return max(0.0, self._retry_at - time.monotonic()) if not self.connected else 0.0

    # -- store ----------------------------------------------------------------------

    async def _store(self, entries: list[Entry], beat: Beat | None) -> None:
        """Build the group of ``entries`` and write or spool it; then answer whoever waits for it."""
        self._seq += 1
        group_id = f"{self.writer.boot}:w{self.index}:{self._seq}"
        spooling = bool(self.writer.spool.pending(self.index)) or not await self.ensure_connection()
        try:
            group = self.builder.build([e.batch for e in entries], group_id, beat, encode=not spooling)
        except Exception:  # noqa: BLE001 - a bug here must not stop the writer: the heartbeat goes on
            log.exception("writer could not build a group of %d batches; they are lost", len(entries))
            self.writer.count("lost")
            _settle(entries, ok=False)
            return
        try:
            if spooling:
                self._spool(group)
            else:
                await self._write_or_set_aside(group)
            ok = True
        except Exception:  # noqa: BLE001 - the writer must outlive any one group (a full disk, a bug)
            log.exception("writer could not write or spool group %s", group.id)
            self._lose(group)
            ok = False
        _settle(entries, ok=ok)

    async def _write_or_set_aside(self, group: Group) -> None:
        try:
            await self._write(group)
        except psycopg.Error as err:
            if aborted(err):
                # A deadlock (or a serialization failure): the database aborted
                # this group in favour of another. Neither an outage nor a
                # refusal: it is replayed from the spool, the connection kept.
                log.warning("database aborted write group %s: %s; replaying it", group.id, str(err).strip())
                self._spool(group)
            elif isinstance(err, psycopg.OperationalError):
                self._lost_connection(err)
                self._spool(group)
            else:
                # Not an outage: the data itself is refused. On disk first,
                # then node by node, so only the refused nodes' rows stay aside.
                log.error("database refused write group %s: %s", group.id, err)
                self.writer.spool.append(to_spool(group), self.index)
                await self._salvage_head(group, str(err))

    def _spool(self, group: Group) -> None:
        self.writer.spool.append(to_spool(group), self.index)
        self.writer.count("spooled")

    def _lose(self, group: Group) -> None:
        """Count a group that could be neither written nor spooled (the log says why); its nodes are offered
        again."""
        self.writer.count("lost")
        self.builder.forget(group.nodes)

    def _rejected(self, group: Group) -> None:
        self.writer.count("rejected")
        self.builder.forget(group.nodes)

    async def _salvage_head(self, group: Group, error: str) -> bool:
        """Write the refused group at the head of this writer's spool one node at a time.

        Each node's part is its own transaction with its own id
        (``<group id>/<node>``), so a part written once is skipped if this
        runs again. Parts the database refuses are kept in ``rejected/``;
        the head leaves the spool once every part is written or kept. False
        when the database went away meanwhile: the head stays, and its replay
        skips the parts already written.
        """
        spool = self.writer.spool
        path, _ = spool.head(self.index)
        parts = split_by_node(group)
        if len(parts) < 2:
            spool.reject(path, error)
            self._rejected(group)
            return True
        for part in parts:
            try:
                await self._write(part)
            except psycopg.OperationalError as err:
                if not aborted(err):
                    self._lost_connection(err)
                return False  # the head stays; its replay skips the parts written
            except psycopg.Error as err:
                log.error("database refused node %s of group %s: %s", min(part.nodes), group.id, err)
                spool.keep_rejected(to_spool(part), str(err))
                self._rejected(part)
        spool.remove(path)
        self.writer.count("split")
        return True

    async def _drain_spool(self) -> None:
        """Replay this writer's spooled groups, oldest first, while the database takes them.

        At most DRAIN_GROUPS_PER_ROUND per call (on close, all): the loop
        comes back between rounds, so heartbeats keep being written and new
        batches keep joining the spool's tail in order.
        """
        spool = self.writer.spool
        budget = None if self._closing else DRAIN_GROUPS_PER_ROUND
        if self._closing and not self._final_try and not self.connected:
            # Closing: one more try to reach the database whatever the backoff
            # says, so that a database back by now gets the spool.
            self._final_try = True
            self._retry_at = 0.0
        while spool.pending(self.index) and (budget is None or budget > 0):
            if budget is not None:
                budget -= 1
            if not await self.ensure_connection():
                return
            path, stored = spool.head(self.index)
            group = from_spool(stored)
            try:
                await self._write(group)
            except psycopg.OperationalError as err:
                if not aborted(err):  # (aborted in a deadlock: replayed next round, on the same connection)
                    self._lost_connection(err)
                return
            except psycopg.Error as err:
                log.error("database refused spooled group %s: %s", group.id, err)
                if not await self._salvage_head(group, str(err)):
                    return
                continue
            spool.remove(path)
            self.writer.count("replayed")

    # -- the connection -----------------------------------------------------------------

    async def ensure_connection(self) -> bool:
        """Whether the writer is connected, connecting first if the backoff allows (False: spool)."""
        if self.connected:
            return True
        if time.monotonic() < self._retry_at or self.writer.given_up:
            return False
        opening = asyncio.ensure_future(asyncio.to_thread(self._open))
        try:
            self.conn = await self.writer.until_given_up(opening, None)
        except TimeoutError:
            # Shutting down while a frozen server holds the connection in its start-up: abandoned.
            opening.add_done_callback(lambda f: f.cancelled() or f.exception() or close_quietly(f.result()))
            self._lost_connection(psycopg.OperationalError("gave up connecting: the collector is shutting down"))
            return False
        except psycopg.Error as err:
            self._lost_connection(err)
            return False
        self._retry_delay = RETRY_MIN_S
        log.info("writer %d connected to the database", self.index)
        return True

    def _open(self) -> psycopg.Connection:
        """A new connection, this bucket's GPU sets loaded and the formatter made (in a worker thread)."""
        conn = psycopg.connect(self.writer.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        try:
            self.builder.connected(conn, self.index, len(self.writer.writers))
        except BaseException:
            close_quietly(conn)
            raise
        return conn

    def _lost_connection(self, err: Exception) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            asyncio.get_running_loop().run_in_executor(None, close_quietly, conn)
            log.warning("writer %d lost the database: %s; spooling to %s", self.index, str(err).strip(),
                        self.writer.spool.directory)
        # Exponential backoff with jitter: a fleet of collectors must not
        # reconnect in lockstep to a database that has just come back.
        self._retry_at = time.monotonic() + self._retry_delay * (0.5 + os.urandom(1)[0] / 255)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)

    async def _write(self, group: Group) -> None:
        """Write one group in one transaction, unless its id is already recorded; psycopg's error if not."""
        conn, writer = self.conn, self.writer
        if conn is None:
            raise psycopg.OperationalError("the writer has no connection")
        if writer.given_up:
            raise psycopg.OperationalError("the collector is shutting down: the group goes to the spool")
        started = time.perf_counter()
        writing = asyncio.ensure_future(asyncio.to_thread(
            write_group, conn, group, collector_id=writer.collector_id, mode=writer.mode))
        while True:
            try:
                written = await writer.until_given_up(writing, WRITE_DEADLINE_S)
                break
            except TimeoutError:
                try:
                    if await writer.until_given_up(asyncio.to_thread(_answers, writer.dsn), None):
                        continue  # alive: the write waits for a lock, not for a hung server
                except TimeoutError:
                    pass  # shutting down: not waited for
                # The thread goes on until the closed connection fails it.
                raise psycopg.OperationalError(f"the database did not finish a write within {WRITE_DEADLINE_S:g} s "
                                               "and does not answer (a hung database), or the collector is "
                                               "shutting down") from None
        if written:
            writer.written(group, time.perf_counter() - started)
        else:
            writer.count("duplicate")


def _settle(entries: list[Entry], *, ok: bool) -> None:
    """Answer the committers waiting for ``entries``: safe (written or spooled), or not."""
    for entry in entries:
        if not entry.settled.done():
            if ok:
                entry.settled.set_result(None)
            else:
                entry.settled.set_exception(StorageBusy("the batch could be neither written nor spooled"))


def _answers(dsn: str) -> bool:
    """Whether the database answers a new connection's query within PROBE_TIMEOUT_S (or so)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=PROBE_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def close_quietly(conn: psycopg.Connection) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - the connection is already broken
        pass
