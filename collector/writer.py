"""The writer: parse -> bounded queue -> one task that writes groups with COPY.

The scraper and the push receiver commit ``Batch``es through an appender into
a bounded ``asyncio.Queue`` (backpressure: a full queue makes ``commit`` wait,
and after COMMIT_TIMEOUT_S raise ``StorageBusy``, which the push receiver turns
into a 503). One task drains the queue into *write groups* — everything that
arrived in up to FLUSH_INTERVAL_S (less when the database is idle and
EARLY_FLUSH_BATCHES have come), at most MAX_GROUP_BATCHES batches — and
writes each group in one transaction, the next group gathering and being built
while the previous one is written: observations and GPU samples with
binary COPY, identity upserts and GPU-set changes, the collector's heartbeat,
and the group's id in ``ingest_batches``. A large group is written as
WRITE_CONNECTIONS *parts*, its batches split by node, each part its own
transaction on its own connection, in parallel: one COPY keeps one database
backend busy, and a second one nearly doubles what the database takes
(bench/bench_writer.py). Each connection is a *lane*: it writes its part of
the next group as soon as its part of this one is written, without waiting
for the other connections. A node's rows are always in one part, on one
lane, in order. (Nodes' alert bookkeeping,
``nodes.last_ok_at``, is not kept per batch: an alert loop reads the
observations since its last round, one indexed range scan per round.)

Delivery is at-least-once with de-duplication: a group whose id is already in
``ingest_batches`` is skipped whole, so a retry after a lost COMMIT
acknowledgement, or a replay from the spool, never writes rows twice. When
the database is unreachable, groups go to the on-disk spool (collector/spool.py)
in order, and once it is back the spool is replayed, oldest first, before any
new group: order is kept and nothing accepted is lost.

A group is built once (caches of identities and GPU sets are updated as it is
built) and then written, or spooled as JSON (``to_spool``, times as exact
integer microseconds), so a spooled group replays exactly as it would have
been written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import copy as pgcopy
from psycopg.pq import TransactionStatus
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.ingest import Batch
from collector.maintenance import ROLLUP_SETTLE
from collector.spool import Spool
from fleetscope import rollups

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from collector.ingest import Appender

log = logging.getLogger("fleetscope.writer")

QUEUE_BATCHES = 20_000          # ~ 1.3 intervals of 10,000 nodes at 15 s
MAX_GROUP_BATCHES = 2_000       # ~ 16,000 GPU sample rows: one COPY of a few ms
FLUSH_INTERVAL_S = 0.25         # how long a batch may wait for company
# ... unless the database is idle and the group already holds this many: a
# burst's tail is then written at once instead of waiting out the interval,
# while a steady trickle still gathers into few transactions (each costs a
# commit, the heartbeat and the de-dup row).
EARLY_FLUSH_BATCHES = 250
# The heartbeat: a group (empty if need be) is written at least this often, and
# a gap of more than HEARTBEAT_GAP_S between beats starts a new observing
# period. Nodes' intervals are >= 5 s, so every slot of every node holds a beat
# while we observe.
HEARTBEAT_S = 2.0
HEARTBEAT_GAP_S = 3 * HEARTBEAT_S
COMMIT_TIMEOUT_S = 5.0          # how long a commit may wait on a full queue
SPOOL_MAX_BYTES = 4 * 2**30     # ~ hours of a 10,000-node fleet's telemetry
RETRY_MIN_S, RETRY_MAX_S = 0.5, 15.0  # reconnect backoff while the database is away
IDENTITY_REFRESH_S = 300        # re-upsert an unchanged identity this often (keeps last_seen fresh)
# A node's GPU set is compared with this process's last one; with several
# replicas receiving one node's pushes another may have written a newer set,
# so an unchanged set is offered again this often (the insert itself skips a
# set equal to the latest in the database).
SET_REFRESH_S = 60
# Connections the writer writes a group's parts on, in parallel. One COPY is
# bound by its one database backend (the client formats rows in a third of the
# time); two parts on two connections took 1.2-1.5x the rows/s of one COPY on
# 2 cores, plain and TimescaleDB (docs/benchmarks.md). A group smaller than
# PARALLEL_MIN_BATCHES is one part: a trickle is not worth a second commit.
WRITE_CONNECTIONS = 2
PARALLEL_MIN_BATCHES = 250
# The interpreter's switch interval while a writer runs. Each of a group's
# round trips ends with its writing thread waiting for the GIL, which the
# event loop (parsing, building the next group) gives up only after the switch
# interval: 5 ms by default, up to 30 ms a group in six round trips. 1 ms cuts
# that wait; the event loop is asked to give the GIL up only when a writing
# thread wants it, a few dozen times a second.
GIL_SWITCH_INTERVAL_S = 0.001
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
# Closing connections at shutdown: psycopg's close of a connection whose
# server is frozen is not waited for past this (the process is ending).
CLOSE_CONNECTIONS_S = 0.5
# A push's commit waits at most this long for its batch to be written or
# spooled (issue 15: a 204 means the data is safe); past it the push is a 503.
ACK_TIMEOUT_S = COMMIT_TIMEOUT_S + WRITE_DEADLINE_S + CONNECT_TIMEOUT_S + 5.0

OBSERVATION_COLUMNS = ("time", "node_id", "ok", "source", "slot", "latency_ms", "error", "collector_id")
OBSERVATION_TYPES = ("timestamptz", "int8", "bool", "text", "int8", "float4", "text", "text")
SAMPLE_COLUMNS = ("time", "node_id", "gpu_uuid", "gpu_index", "gpu_util", "mem_copy_util", "fb_used_mib",
                  "fb_free_mib", "power_w", "energy_mj", "temp_c", "sm_clock_mhz", "mem_clock_mhz",
                  "pcie_replay", "ecc_sbe", "ecc_dbe", "xid_last", "lost")
SAMPLE_TYPES = ("timestamptz", "int8", "text", "int2", "float4", "float4", "float4", "float4", "float4",
                "float8", "float4", "float4", "float4", "int8", "int8", "int8", "int4", "bool")
IDENTITY_COLUMNS = ("gpu_uuid", "gpu_index", "model", "serial", "pci_bus_id", "pci_device_id",
                    "pci_subsystem_id", "board_part_number", "architecture", "virtualization_mode",
                    "memory_total_bytes", "sm_count", "max_sm_clock_mhz", "max_mem_clock_mhz",
                    "driver_version", "vbios_version")
IDENTITY_TYPES = ("bigint", "timestamptz", "timestamptz", "text", "integer", "text", "text", "text", "text",
                  "text", "text", "text", "text", "bigint", "integer", "integer", "integer", "text", "text")
# One statement for a group's identities: the GPU claim trigger then runs once
# per group (fleetscope/migrations/0001_core.sql, gpus_mark_shared).
UPSERT_IDENTITY_SQL = """
INSERT INTO gpus (node_id, first_seen, last_seen, {cols})
SELECT * FROM unnest({arrays})
ON CONFLICT (node_id, gpu_uuid) DO UPDATE SET
    last_seen = greatest(gpus.last_seen, EXCLUDED.last_seen),
    {updates}
""".format(
    cols=", ".join(IDENTITY_COLUMNS),
    arrays=", ".join(f"%s::{t}[]" for t in IDENTITY_TYPES),
    updates=",\n    ".join(f"{c} = coalesce(EXCLUDED.{c}, gpus.{c})" for c in IDENTITY_COLUMNS[1:]),
)


# A set is a row only when it differs from the node's latest set before it
# (another replica, or this process before a restart, may have written it).
# One statement for a group's sets, passed as one JSON array: a statement per
# set cost ~6 % of the scraper's CPU in psycopg's parameter dumping
# (py-spy at 400 scrapes/s, docs/benchmarks-scrape.md). The statement does not
# see its own rows, so the writer leaves out a set equal to the one before it
# for the same node in the same group (_sets_json).
INSERT_SETS_SQL = """
INSERT INTO node_gpu_sets (node_id, since, healthy, lost)
SELECT x.node, x.since, x.healthy, x.lost
  FROM jsonb_to_recordset(%s::jsonb) AS x(node bigint, since timestamptz, healthy text[], lost text[])
 WHERE NOT EXISTS (
       SELECT 1 FROM (SELECT s.healthy, s.lost FROM node_gpu_sets s
                       WHERE s.node_id = x.node AND s.since <= x.since ORDER BY s.since DESC LIMIT 1) latest
        WHERE latest.healthy = x.healthy AND latest.lost = x.lost)
ON CONFLICT (node_id, since) DO NOTHING
"""


def _sets_json(sets: list[tuple]) -> str:
    """A group's set rows (node, since, healthy, lost) as the JSON INSERT_SETS_SQL reads."""
    rows, last = [], {}
    for node, since, healthy, lost in sets:
        if last.get(node) == (healthy, lost):
            continue  # equal to this node's previous set in the group: the statement would not see it
        last[node] = (healthy, lost)
        rows.append({"node": node, "since": since.isoformat(), "healthy": healthy, "lost": lost})
    return json.dumps(rows)


_UUID = itemgetter(0)  # of a GpuSample: gpu_uuid
_UUID_AND_INDEX = itemgetter(0, 1)  # gpu_uuid, gpu_index
_UUID_INDEX_LOST = itemgetter(0, 1, 15)  # gpu_uuid, gpu_index, lost


def _lane_ids(parts: list[dict[str, Any]]) -> tuple[str, ...]:
    """Which node bucket each part of a split group holds (``p0``, ``p1``, ...; an empty bucket has no part)."""
    return tuple(part["id"].rsplit("/", 1)[-1] for part in parts)


class _SwitchInterval:
    """The interpreter's switch interval (one per process), lowered while any writer that asks for it runs.

    Two writers in one process (a collector's and a test's, say) must not
    undo each other: the lowest asked for holds until the last one closes,
    which puts back what the interpreter had before the first.
    """

    def __init__(self) -> None:
        self._asked: dict[int, float] = {}  # id(writer) -> its interval
        self._before = sys.getswitchinterval()

    def lower(self, writer: object, interval_s: float) -> None:
        if not self._asked:
            self._before = sys.getswitchinterval()
        self._asked[id(writer)] = interval_s
        sys.setswitchinterval(min([self._before, *self._asked.values()]))

    def restore(self, writer: object) -> None:
        if self._asked.pop(id(writer), None) is not None:
            sys.setswitchinterval(min([self._before, *self._asked.values()]))


_SWITCH_INTERVAL = _SwitchInterval()


class _Behind(Exception):
    """A part not written because the part before it on its connection failed (``Writer._lane``)."""


class StorageBusy(Exception):
    """The writer's queue stayed full: the caller should answer 503 and let the sender retry."""


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(t: datetime) -> int:
    """Microseconds since the epoch, exactly (groups carry times as integers to be JSON-able)."""
    return (t - EPOCH) // timedelta(microseconds=1)


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


class Writer:
    """The only writer of telemetry and liveness. Use as ``async with Writer(...) as writer``."""

    def __init__(self, dsn: str, *, spool_dir: Path, collector_id: str, mode: str,
                 registry: CollectorRegistry | None = None, queue_batches: int = QUEUE_BATCHES,
                 max_group_batches: int = MAX_GROUP_BATCHES, flush_interval_s: float = FLUSH_INTERVAL_S,
                 heartbeat_s: float = HEARTBEAT_S, spool_max_bytes: int = SPOOL_MAX_BYTES,
                 commit_timeout_s: float = COMMIT_TIMEOUT_S,
                 early_flush_batches: int = EARLY_FLUSH_BATCHES, connections: int = WRITE_CONNECTIONS,
                 parallel_min_batches: int = PARALLEL_MIN_BATCHES,
                 switch_interval_s: float | None = GIL_SWITCH_INTERVAL_S) -> None:
        if connections < 1 or parallel_min_batches < 1:
            raise ValueError("the writer needs at least one connection, and parts of at least one batch")
        self.dsn = dsn
        self.collector_id = collector_id
        self.mode = mode
        self.spool = Spool(spool_dir, max_bytes=spool_max_bytes)
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=queue_batches)
        self.max_group_batches = max_group_batches
        self.flush_interval_s = flush_interval_s
        self.early_flush_batches = early_flush_batches
        self.heartbeat_s = heartbeat_s
        self.commit_timeout_s = commit_timeout_s
        self.connections = connections
        self.parallel_min_batches = parallel_min_batches
        self.switch_interval_s = switch_interval_s  # None: leave the interpreter's
        self._boot = f"{collector_id}:{time.time_ns()}"
        self._seq = 0
        # A synchronous connection used from a worker thread, one call at a
        # time: psycopg's sync COPY formats rows in C without a coroutine per
        # row (the async one awaits each write_row), and a long COPY leaves
        # the event loop free for pushes and scrapes.
        self._conn: psycopg.Connection | None = None
        # The other connections a large group's parts are written on; opened
        # when needed, dropped on an error, and reopened after the backoff.
        self._spares: list[psycopg.Connection] = []
        self._opening_spares = asyncio.Lock()
        # Formats a group's COPY data while the group is built (_encode).
        self._formatter: psycopg.Cursor | None = None
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN_S
        self._task: asyncio.Task | None = None
        self._writing: asyncio.Task | None = None  # the group dispatched last (done: the database is idle)
        self._inflight: deque[asyncio.Task] = deque()  # groups dispatched and not yet settled, in order
        self._lanes: list[asyncio.Task] = []  # each connection's last part of the last split group (_dispatch)
        self._lane_ids: tuple[str, ...] = ()  # that group's parts' suffixes (p0, p1, ...): which lane is which
        self._closing = False
        self._close_called = asyncio.Event()  # wakes a _collect waiting out a heartbeat
        # Set once the writer stops waiting on the database (``give_up_database``,
        # at shutdown: issue 15, item 3): what is in flight and what comes
        # next is spooled, and the database is not asked again.
        self._given_up = asyncio.Event()
        self._give_up_timer: asyncio.TimerHandle | None = None
        self._final_try = False  # the reconnect on close that ignores the backoff (_drain_spool)
        self._identities: dict[int, tuple[tuple, float]] = {}  # node -> (its last identities, when written)
        # node -> ((healthy, lost), when): the last set this process wrote or read.
        self._sets: dict[int, tuple[tuple[tuple[str, ...], tuple[str, ...]], float]] | None = None
        # node -> (what its last payload said of its GPUs, until when the two
        # caches above are known to agree with it): the fast path of _rows.
        self._steady: dict[int, tuple[tuple, float]] = {}
        self._generation = 0  # counts _forget calls: a group built before one is built again
        self._period_start: datetime | None = None
        self._last_beat: datetime | None = None
        # Pushed batches whose committer waits until they are written or
        # spooled (issue 15), by id(batch); and parts lost (neither).
        self._acks: dict[int, asyncio.Future] = {}
        self._lost_ids: set[str] = set()
        self._register_metrics(registry or CollectorRegistry())

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Writer:
        if self.switch_interval_s is not None:
            _SWITCH_INTERVAL.lower(self, self.switch_interval_s)
        await self._ensure_connection()  # loads the GPU-set cache; a database that is down is retried later
        self._task = asyncio.create_task(self._run(), name="fleetscope-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Write (or spool) everything queued, then stop.

        After ``give_up_database`` this is bounded: what the database has not
        taken by then is spooled, and connections are not waited for.
        """
        self._closing = True
        self._close_called.set()
        try:
            if self._task is not None:
                await self._task
                self._task = None
        finally:
            conns = [c for c in (self._conn, *self._spares) if c is not None]
            self._conn, self._spares = None, []
            if conns:
                closing = asyncio.ensure_future(asyncio.gather(*(asyncio.to_thread(_close_quietly, c) for c in conns)))
                if self._given_up.is_set() or self._give_up_timer is not None:
                    # Shutting down: a frozen server's connection is abandoned, not waited for.
                    await asyncio.wait({closing}, timeout=CLOSE_CONNECTIONS_S)
                else:
                    await closing
            if self._give_up_timer is not None:
                self._give_up_timer.cancel()
            _SWITCH_INTERVAL.restore(self)

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

    async def _until_given_up(self, work: Any, seconds: float | None) -> Any:
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
        return self._conn is not None and not self._conn.closed

    # -- the task ------------------------------------------------------------------

    async def _run(self) -> None:
        # While groups are written (in worker threads), the next one is
        # collected and built on the event loop: building costs ~15 % of a
        # group's write, and in series it was idle time for the database
        # (bench/bench_writer.py). At most two groups are in flight: the one
        # being written, and the next, queued behind it connection by
        # connection (_turn).
        try:
            while True:
                batches = await self._collect()
                last = self._closing and not batches and self.queue.empty()
                # (last: a final heartbeat, so the observing period ends where we stopped.)
                generation = self._generation
                parts = self._build(batches)
                while True:
                    lanes = await self._turn(parts)
                    if self._generation == generation:
                        break
                    # An earlier group was refused and its nodes' caches
                    # forgotten after this one was built: build it again, so
                    # it carries the identities and sets it relied on.
                    for part in parts:
                        self._forget(part)
                    generation = self._generation
                    parts = self._build(batches)
                self._dispatch(parts, lanes, batches, generation)  # (no await since _turn: nothing changed)
                if last:
                    break
        finally:
            # Every group in flight is written and settled before close() closes the connections.
            await asyncio.shield(asyncio.gather(*self._inflight, *self._lanes, return_exceptions=True))
            self._inflight.clear()

    async def _settled(self, keep: int) -> None:
        """Wait until at most ``keep`` groups are in flight (written and settled, in order, before them)."""
        while len(self._inflight) > keep:
            # Shielded: a cancelled writer task must not cancel a group's
            # writing midway (its worker threads would go on with the
            # connections that close() then closes).
            await asyncio.shield(self._inflight[0])
            self._inflight.popleft()

    async def _turn(self, parts: list[dict[str, Any]]) -> list[psycopg.Connection] | None:
        """Wait until a group may be dispatched; the connections of its lanes, or None to write it otherwise.

        A group split in parts is written in *lanes*: each connection writes
        its part as soon as it has written its part of the group before,
        instead of all parts starting together once the slowest part of the
        group before is done (in lockstep one connection waited ~25 % of the
        time for the other; the lanes took 7-10 % more rows/s,
        bench/bench_writer_ab.py). Parts are split by node the same way in
        every split group, so a node's rows stay on one connection, in order;
        after a part fails, the parts queued behind it on its connection are
        not written but spooled behind it (``_Behind``). A split group waits
        for the group before the one in flight; any other group (one part,
        the spool in use, the database away, the group before not split the
        same way) waits for every group before it.
        """
        await self._settled(keep=1)
        lanes = await self._lane_connections(len(parts))
        if lanes is None or self._lane_ids != _lane_ids(parts):
            await self._settled(keep=0)
            self._lanes, self._lane_ids = [], ()
            # (The groups waited for may have spooled, or lost a connection.)
            lanes = await self._lane_connections(len(parts))
        return lanes

    def _dispatch(self, parts: list[dict[str, Any]], lanes: list[psycopg.Connection] | None, batches: list[Batch],
                  generation: int) -> None:
        """Start writing a group (``_turn`` said how), in order after the groups in flight."""
        previous = self._inflight[-1] if self._inflight else None
        if lanes is not None:
            # Behind the parts of the group in flight; once it is settled
            # (any failure of its parts spooled or salvaged by then), behind nothing.
            behind = self._lanes if previous is not None and not previous.done() else [None] * len(parts)
            self._lanes = [asyncio.create_task(self._lane(b, part, conn))
                           for b, part, conn in zip(behind, parts, lanes)]
            self._lane_ids = _lane_ids(parts)
            task = asyncio.create_task(self._settle_lanes(parts, lanes, self._lanes, previous, batches, generation))
        else:
            task = asyncio.create_task(self._submit(parts))
        self._inflight.append(task)
        self._writing = task
        waiting = [self._acks.pop(id(b)) for b in batches if id(b) in self._acks]
        if waiting:
            ids = {part["id"] for part in parts}
            task.add_done_callback(lambda t: self._acknowledge(t, waiting, ids))

    def _acknowledge(self, task: asyncio.Task, waiting: list[asyncio.Future], ids: set[str]) -> None:
        """A group settled: its pushes are safe (written or spooled) unless a part of it was lost."""
        lost = bool(ids & self._lost_ids)
        self._lost_ids -= ids
        failed = lost or task.cancelled() or task.exception() is not None
        for fut in waiting:
            if not fut.done():
                if failed:
                    fut.set_exception(StorageBusy("the batch could be neither written nor spooled"))
                else:
                    fut.set_result(None)

    async def _lane_connections(self, parts: int) -> list[psycopg.Connection] | None:
        """A connection for each of a split group's parts; None for one part, or while the spool is in use."""
        if parts < 2 or len(self.spool) or not self.database_up or self._give_up_timer is not None:
            return None  # (shutting down: no new spare connections to wait for)
        try:
            conns = [self._conn, *await self._spare_connections(parts - 1)]
        except Exception:  # noqa: BLE001 - not psycopg's (psycopg's are handled there): written otherwise
            log.exception("writer could not open its spare connections")
            return None
        if len(conns) < parts or len(self.spool) or not self.database_up:
            return None
        return conns

    async def _lane(self, behind: asyncio.Task | None, part: dict[str, Any],
                    conn: psycopg.Connection) -> Exception | None:
        """Write a part on its connection once the part before it there is written; its error, or None."""
        if behind is not None and await behind is not None:
            return _Behind()
        return (await self._write_each([part], conn))[0]

    async def _settle_lanes(self, parts: list[dict[str, Any]], conns: list[psycopg.Connection],
                            lanes: list[asyncio.Task], previous: asyncio.Task | None, batches: list[Batch],
                            generation: int) -> None:
        """Wait for a group's parts in their lanes and for the group before it, then settle the parts in order."""
        try:
            errors = await asyncio.gather(*lanes)
            if previous is not None:
                await previous
        except Exception:  # noqa: BLE001 - the writer must outlive any one group (a bug)
            log.exception("writer could not write or spool group %s", parts[0]["id"])
            self._lose(parts)
            return
        await self._settle_all(list(zip(parts, conns, errors)), batches, generation)

    async def _settle_all(self, outcomes: list[tuple[dict[str, Any], psycopg.Connection, Exception | None]],
                          batches: list[Batch] | None = None, generation: int | None = None) -> None:
        """Settle a group's parts, in order: each (part, its connection, its error or None)."""
        for part, conn, error in outcomes:
            try:
                if isinstance(error, _Behind) and self._generation != generation:
                    # The part before it on its connection was refused, and
                    # its nodes' caches forgotten, after this one was built
                    # (from ``batches``, at ``generation``): build it again
                    # (as _run does a group not yet dispatched), its nodes
                    # forgotten too, so that it carries every identity and
                    # set it had.
                    self._forget(part)
                    nodes = {row[1] for row in part["obs"]}
                    part = self._rows([b for b in batches if b.node_id in nodes], part["id"], part["beat"])
                await self._settle(part, conn, error)
            except Exception:  # noqa: BLE001 - the writer must outlive any one group (a full disk, a bug)
                log.exception("writer could not write or spool group %s", part["id"])
                self._lose([part])

    async def _collect(self) -> list[Batch]:
        """Wait for the first batch (at most a heartbeat), then gather for up to the flush interval."""
        batches: list[Batch] = []
        if self._closing:
            try:
                batches.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return batches
        else:
            # close() ends the wait: a shutdown does not wait out a heartbeat (issue 15, item 3).
            getter = asyncio.ensure_future(self.queue.get())
            closing = asyncio.ensure_future(self._close_called.wait())
            try:
                await asyncio.wait((getter, closing), timeout=self.heartbeat_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
                if not getter.done():
                    getter.cancel()  # a cancelled get() leaves its item in the queue
            if not getter.done():  # (cancelled above)
                return batches
            batches.append(getter.result())
        deadline = time.monotonic() + (0 if self._closing else self.flush_interval_s)
        while len(batches) < self.max_group_batches:
            try:
                batches.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            writing = self._writing
            idle = writing is None or writing.done()
            if idle and len(batches) >= self.early_flush_batches:
                break
            if idle or len(batches) < self.early_flush_batches:
                try:
                    batches.append(await asyncio.wait_for(self.queue.get(), timeout=remaining))
                except (asyncio.TimeoutError, TimeoutError):
                    break
                continue
            # Enough for an early flush: wait for the next batch or for the
            # database to become idle, whichever comes first.
            getter = asyncio.ensure_future(self.queue.get())
            await asyncio.wait((getter, writing), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                batches.append(getter.result())
            else:
                getter.cancel()  # a cancelled get() leaves its item in the queue
                if not writing.done():
                    break  # the deadline
        return batches

    # -- building a group -----------------------------------------------------------

    def _build(self, batches: list[Batch]) -> list[dict[str, Any]]:
        try:
            return self._build_parts(batches)
        except Exception:  # noqa: BLE001 - a bug here must not stop the writer: the heartbeat goes on
            log.exception("writer could not build a group of %d batches; they are lost", len(batches))
            self._m_groups.labels("lost").inc()
            return self._build_parts([])

    def _build_group(self, batches: list[Batch]) -> dict[str, Any]:
        """Turn batches into the rows of one transaction, as a JSON-able dict."""
        return self._build_parts(batches, parts=1)[0]

    def _build_parts(self, batches: list[Batch], parts: int | None = None) -> list[dict[str, Any]]:
        """A group as one part, or (large enough) as ``connections`` parts split by node.

        Part ids are ``<group id>/p<i>``; the heartbeat rides in the first
        part, which is built even when no node falls in it.
        """
        now = datetime.now(timezone.utc)
        if self._last_beat is None or (now - self._last_beat).total_seconds() > HEARTBEAT_GAP_S:
            self._period_start = now
        self._last_beat = now
        self._seq += 1
        group_id, beat = f"{self._boot}:{self._seq}", (self._period_start, now)
        if parts is None:
            parts = self.connections if len(batches) >= self.parallel_min_batches else 1
            if parts > 1 and min(b.received_at for b in batches) < now - ROLLUP_SETTLE:
                # Rows this old may be under the hourly rollup's watermark:
                # each part would then share-lock the watermark row and mark
                # it, and two parts doing so deadlock (one is aborted and
                # replayed: _settle). One part, then.
                parts = 1
        if parts == 1:
            return [self._rows(batches, group_id, beat)]
        buckets: list[list[Batch]] = [[] for _ in range(parts)]
        for b in batches:
            buckets[b.node_id % parts].append(b)
        return [self._rows(bucket, f"{group_id}/p{i}", beat if i == 0 else None)
                for i, bucket in enumerate(buckets) if bucket or i == 0]

    def _rows(self, batches: list[Batch], group_id: str, beat: tuple | None) -> dict[str, Any]:
        """A group's rows. GPU samples are kept as blocks, ``(time, node, samples)``: one per batch.

        A block is what a batch adds to ``gpu_samples``, each sample a row
        once the block's time and node lead it (``sample_rows``); rows are
        made one at a time as they are formatted, not kept as a list of
        16,000 tuples per group (that list cost a fifth of the writer's
        CPU: py-spy --gil, bench/bench_writer.py).
        """
        observations, blocks, identities, sets = [], [], [], []
        mono = time.monotonic()
        cid = self.collector_id
        steady = self._steady
        for b in batches:
            t, node, p = b.received_at, b.node_id, b.payload
            observations.append((t, node, b.ok, b.source, b.slot, b.latency_ms, b.error, cid))
            if not b.ok or p is None:
                continue
            blocks.append((t, node, p.samples))
            # The usual case: the node says what it said last time, and both
            # caches agree with it (one C-level comparison, no work per GPU).
            key = (tuple(p.identities), tuple(map(_UUID_INDEX_LOST, p.samples)), p.lost)
            known = steady.get(node)
            if known is not None and known[0] == key and mono < known[1]:
                continue
            ident_until = self._identity_rows(b, t, mono, identities)
            set_until = self._set_row(b, t, sets, mono)
            steady[node] = (key, min(ident_until, set_until))
        return {"id": group_id, "obs": observations, "samples": blocks, "ids": identities, "sets": sets,
                "beat": beat, "obs_copy": self._encode(observations, OBSERVATION_TYPES),
                "samples_copy": self._encode(sample_rows(blocks), SAMPLE_TYPES)}

    def _encode(self, rows: Iterable[tuple], types: tuple[str, ...]) -> bytes | None:
        """The rows as binary COPY data, formatted now, on the event loop, while the previous group is written.

        Formatted inside the COPY instead, in the writing thread, the rows
        wait for the GIL while the event loop builds the next group, and the
        database backend waits for them (ClientRead in pg_stat_activity; a
        16,000-row COPY took 45-90 ms instead of 35-40). None when there is no
        formatter yet (the database was down at start), or while groups go to
        the spool (they are stored as rows): the COPY formats them.
        """
        if self._formatter is None or not self.database_up or len(self.spool):
            return None
        chunks = _Chunks()
        try:
            with psycopg.Copy(self._formatter, binary=True, writer=chunks) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        except Exception:  # noqa: BLE001 - a value that cannot be formatted: the COPY meets it, and refuses the part
            return None
        return b"".join(chunks.data)

    def _identity_rows(self, b: Batch, t: datetime, mono: float, out: list) -> float:
        """Add the node's identity rows unless they are the ones written lately; until when that holds."""
        # One C-level comparison of the whole (identities, GPU indexes) pair
        # with the node's last one skips the per-GPU work.
        shape = (tuple(b.payload.identities), tuple(map(_UUID_AND_INDEX, b.payload.samples)))
        cached = self._identities.get(b.node_id)
        if cached is not None and cached[0] == shape and mono - cached[1] < IDENTITY_REFRESH_S:
            return cached[1] + IDENTITY_REFRESH_S
        self._identities[b.node_id] = (shape, mono)
        seen = {ident.uuid: ident for ident in b.payload.identities}
        indexes = dict(shape[1])
        # Every GPU with telemetry is registered, with what identity it gave.
        for gpu_uuid in list(indexes) + [u for u in seen if u not in indexes]:
            ident = seen.get(gpu_uuid)
            out.append((b.node_id, t, t, gpu_uuid, indexes.get(gpu_uuid),
                        *(ident[1:] if ident else (None,) * 14)))
        return mono + IDENTITY_REFRESH_S

    def _set_row(self, b: Batch, t: datetime, out: list, mono: float) -> float:
        """Add the node's GPU set unless it is the one written or read lately; until when that holds."""
        if b.payload.lost:
            current = (tuple(sorted(b.healthy_gpus)), tuple(b.lost_gpus))
        else:  # the usual case, in C: every GPU healthy (the parser flags a sample lost with its UUID in `lost`)
            current = (tuple(sorted(map(_UUID, b.payload.samples))), ())
        if self._sets is not None:
            cached = self._sets.get(b.node_id)
            if cached is not None and cached[0] == current and mono - cached[1] < SET_REFRESH_S:
                return cached[1] + SET_REFRESH_S
            self._sets[b.node_id] = (current, mono)
        # Without the cache (the database was down when we started) every set
        # is written: a repeated set is a redundant row, never a wrong one.
        # Sorted, so a set compares equal to the same set written by another process.
        out.append((b.node_id, t, list(current[0]), list(current[1])))
        return mono + SET_REFRESH_S if self._sets is not None else mono

    # -- writing ------------------------------------------------------------------

    async def _submit(self, parts: list[dict[str, Any]]) -> None:
        """Write a group's parts, in parallel on their own connections; then settle each, in order."""
        kept = 0  # parts spooled: not lost if a later one cannot be
        try:
            if len(self.spool) or not await self._ensure_connection():
                for part in parts:
                    self._spool_group(part)
                    kept += 1
                await self._drain_spool()
                return
            conns = [self._conn, *await self._spare_connections(len(parts) - 1)]
            results = await asyncio.gather(
                *(self._write_each(parts[i::len(conns)], conn) for i, conn in enumerate(conns)))
        except Exception:  # noqa: BLE001 - the writer must outlive any one group (a full disk, a bug)
            log.exception("writer could not write or spool %d part(s) of group %s", len(parts) - kept, parts[0]["id"])
            self._lose(parts[kept:])
            return
        # Outcomes are settled in the parts' order, so the spool keeps the
        # order the parts were built in.
        outcomes = {part["id"]: (conn, error) for i, conn in enumerate(conns)
                    for part, error in zip(parts[i::len(conns)], results[i])}
        await self._settle_all([(part, *outcomes[part["id"]]) for part in parts])

    async def _write_each(self, parts: list[dict[str, Any]], conn: psycopg.Connection) -> list[Exception | None]:
        """Write parts one after another on one connection; each one's error (or None)."""
        errors: list[Exception | None] = []
        for part in parts:
            try:
                await self._write(part, conn)
                errors.append(None)
            except Exception as err:  # noqa: BLE001 - settled by _settle, in order
                errors.append(err)
        return errors

    async def _settle(self, part: dict[str, Any], conn: psycopg.Connection, error: Exception | None) -> None:
        if error is None:
            return
        if isinstance(error, _Behind):
            self._spool_group(part)  # queued behind a part that failed on its connection: spooled behind it
        elif _aborted(error):
            # A deadlock (or a serialization failure): the database aborted
            # this part in favour of another. Neither an outage nor a
            # refusal: the part is replayed from the spool, the connection kept.
            log.warning("database aborted write group %s: %s; replaying it", part["id"], str(error).strip())
            self._spool_group(part)
        elif isinstance(error, psycopg.OperationalError):
            self._lost_connection(error, conn)
            self._spool_group(part)
        elif isinstance(error, psycopg.Error) and not len(self.spool):
            # Not an outage: the data itself is refused. On disk first,
            # then node by node, so only the refused nodes' rows stay aside.
            log.error("database refused write group %s: %s", part["id"], error)
            self.spool.append(to_spool(part))
            # The salvage writes on the main connection: first let the parts
            # of the next group that are on it finish (they do not wait for this).
            await asyncio.gather(*self._lanes)
            await self._salvage_head(part, str(error))
        elif isinstance(error, psycopg.Error):
            # Refused behind a part spooled in this round (its connection was
            # lost): it waits its turn, and its replay is salvaged then.
            self._spool_group(part)
        else:
            raise error

    async def _spare_connections(self, wanted: int) -> list[psycopg.Connection]:
        """Up to ``wanted`` open spare connections (fewer while the database refuses new ones)."""
        wanted = min(wanted, self.connections - 1)
        async with self._opening_spares:  # (a lane's turn and a group's _submit may both ask)
            self._spares = [c for c in self._spares if not c.closed]
            while len(self._spares) < wanted and time.monotonic() >= self._retry_at:
                try:
                    conn = await asyncio.to_thread(psycopg.connect, self.dsn, autocommit=True,
                                                   connect_timeout=CONNECT_TIMEOUT_S)
                except psycopg.Error as err:
                    log.warning("writer could not open a spare connection: %s", str(err).strip())
                    self._back_off()
                    break
                self._spares.append(conn)
                self._retry_delay = RETRY_MIN_S
            return self._spares[:wanted]

    async def _salvage_head(self, group: dict[str, Any], error: str) -> bool:
        """Write the refused group at the spool's head one node at a time.

        Each node's part is its own transaction with its own id
        (``<group id>/<node>``), so a part written once is skipped if this
        runs again. Parts the database refuses are kept in ``rejected/``;
        the head leaves the spool once every part is written or kept. False
        when the database went away meanwhile: the head stays, and its replay
        skips the parts already written.
        """
        path, _ = self.spool.head()
        parts = split_by_node(group)
        if len(parts) < 2:
            self.spool.reject(path, error)
            self._rejected(group)
            return True
        for part in parts:
            try:
                await self._write(part)
            except psycopg.OperationalError as err:
                if not _aborted(err):
                    self._lost_connection(err)
                return False  # the head stays; its replay skips the parts written
            except psycopg.Error as err:
                log.error("database refused node %s of group %s: %s", part["obs"][0][1], group["id"], err)
                self.spool.keep_rejected(to_spool(part), str(err))
                self._rejected(part)
        self.spool.remove(path)
        self._m_groups.labels("split").inc()
        return True

    def _lose(self, parts: list[dict[str, Any]]) -> None:
        """Count parts that could be neither written nor spooled (the log says why); their nodes are offered again."""
        for part in parts:
            self._m_groups.labels("lost").inc()
            self._lost_ids.add(part["id"])
            self._forget(part)

    def _rejected(self, group: dict[str, Any]) -> None:
        self._m_groups.labels("rejected").inc()
        self._forget(group)

    def _forget(self, group: dict[str, Any]) -> None:
        """Drop the caches' view of a group that was not written: its nodes' sets and identities are offered again."""
        self._generation += 1
        nodes = {row[1] for row in group["obs"]}
        for node in nodes:
            self._steady.pop(node, None)
            self._identities.pop(node, None)
            if self._sets is not None:
                self._sets.pop(node, None)

    def _spool_group(self, group: dict[str, Any]) -> None:
        self.spool.append(to_spool(group))
        self._m_groups.labels("spooled").inc()

    async def _drain_spool(self) -> None:
        """Replay spooled groups, oldest first, while the database takes them.

        At most DRAIN_GROUPS_PER_ROUND per call (on close, all): the writer's
        loop comes back between rounds, so heartbeats keep being written and
        new batches keep joining the spool's tail in order.
        """
        budget = None if self._closing else DRAIN_GROUPS_PER_ROUND
        if self._closing and not self._final_try and not self.database_up:
            # Closing: one more try to reach the database whatever the backoff
            # says, so that a database back by now gets the spool (pushes now
            # wait for their write, so the backoff may still be long here).
            self._final_try = True
            self._retry_at = 0.0
        while len(self.spool) and (budget is None or budget > 0):
            if budget is not None:
                budget -= 1
            if not await self._ensure_connection():
                return
            path, stored = self.spool.head()
            group = from_spool(stored)
            try:
                await self._write(group)
            except psycopg.OperationalError as err:
                if not _aborted(err):  # (aborted in a deadlock: replayed next round, on the same connection)
                    self._lost_connection(err)
                return
            except psycopg.Error as err:
                log.error("database refused spooled group %s: %s", group["id"], err)
                if not await self._salvage_head(group, str(err)):
                    return
                continue
            self.spool.remove(path)
            self._m_groups.labels("replayed").inc()
            if self._closing and not self.database_up:
                return

    async def _ensure_connection(self) -> bool:
        if self.database_up:
            return True
        if time.monotonic() < self._retry_at or self._given_up.is_set():
            return False
        opening = asyncio.ensure_future(asyncio.to_thread(self._open))
        try:
            self._conn = await self._until_given_up(opening, None)
        except TimeoutError:
            # Shutting down while a frozen server holds the connection in its start-up: abandoned.
            opening.add_done_callback(lambda f: f.cancelled() or f.exception() or _close_quietly(f.result()))
            self._lost_connection(psycopg.OperationalError("gave up connecting: the collector is shutting down"))
            return False
        except psycopg.Error as err:
            self._lost_connection(err)
            return False
        self._retry_delay = RETRY_MIN_S
        self._m_db_up.set(1)
        log.info("writer connected to the database")
        return True

    def _lost_connection(self, err: Exception, conn: psycopg.Connection | None = None) -> None:
        """``conn`` (default: the main one) failed; losing a spare leaves the main connection up."""
        if conn is not None and conn is not self._conn:
            if conn in self._spares:
                self._spares.remove(conn)
                asyncio.get_running_loop().run_in_executor(None, _close_quietly, conn)
                log.warning("writer lost a spare connection: %s", str(err).strip())
        else:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                asyncio.get_running_loop().run_in_executor(None, _close_quietly, conn)
                log.warning("writer lost the database: %s; spooling to %s", str(err).strip(),
                            self.spool.directory)
            self._m_db_up.set(0)
        self._back_off()

    def _back_off(self) -> None:
        # Exponential backoff with jitter: a fleet of collectors must not
        # reconnect in lockstep to a database that has just come back.
        self._retry_at = time.monotonic() + self._retry_delay * (0.5 + os.urandom(1)[0] / 255)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)

    def _open(self) -> psycopg.Connection:
        """A new main connection, the GPU-set cache loaded and the formatter made (in a worker thread)."""
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        try:
            self._load_sets(conn)
            if self._formatter is None:
                self._formatter = _formatting_cursor(conn)
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    def _load_sets(self, conn: psycopg.Connection) -> None:
        if self._sets is not None:
            return
        rows = conn.execute(
            "SELECT DISTINCT ON (node_id) node_id, healthy, lost FROM node_gpu_sets ORDER BY node_id, since DESC"
        ).fetchall()
        mono = time.monotonic()
        self._sets = {r[0]: ((tuple(sorted(r[1])), tuple(r[2])), mono) for r in rows}

    async def _write(self, group: dict[str, Any], conn: psycopg.Connection | None = None) -> None:
        """Write one group in one transaction (on ``conn``, default the main one), unless its id is already recorded."""
        conn = conn or self._conn
        if conn is None:
            raise psycopg.OperationalError("the writer has no connection")
        if self._given_up.is_set():
            raise psycopg.OperationalError("the collector is shutting down: the group goes to the spool")
        started = time.perf_counter()
        writing = asyncio.ensure_future(asyncio.to_thread(self._write_sync, conn, group))
        while True:
            try:
                written = await self._until_given_up(writing, WRITE_DEADLINE_S)
                break
            except TimeoutError:
                try:
                    if await self._until_given_up(asyncio.to_thread(_answers, self.dsn), None):
                        continue  # alive: the write waits for a lock, not for a hung server
                except TimeoutError:
                    pass  # shutting down: not waited for
                # The thread goes on until the closed connection fails it.
                raise psycopg.OperationalError(f"the database did not finish a write within {WRITE_DEADLINE_S:g} s "
                                               "and does not answer (a hung database), or the collector is "
                                               "shutting down") from None
        if not written:
            self._m_groups.labels("duplicate").inc()
            return
        self._m_rows.labels("observations").inc(len(group["obs"]))
        self._m_rows.labels("gpu_samples").inc(sample_count(group))
        self._m_groups.labels("written").inc()
        self._m_flush.observe(time.perf_counter() - started)

    def _write_sync(self, conn: psycopg.Connection, group: dict[str, Any]) -> bool:
        """Write a group in one transaction; False if its id was already written.

        Six round trips: BEGIN, two per COPY, and one for everything else
        (psycopg's pipeline mode; COPY itself cannot be pipelined). Each round
        trip from this worker thread waits for the GIL while the event loop
        builds the next group, so the group's id is recorded last, with the
        COMMIT, instead of checked in a round trip of its own first: a group
        already written then fails (its observations' unique key, or the id's),
        is rolled back, and is found in ``ingest_batches``.
        """
        try:
            conn.execute("BEGIN")
            cur = conn.cursor()
            for table, columns, types, key, rows in (
                    ("observations", OBSERVATION_COLUMNS, OBSERVATION_TYPES, "obs", group["obs"]),
                    ("gpu_samples", SAMPLE_COLUMNS, SAMPLE_TYPES, "samples", sample_rows(group["samples"]))):
                if not group[key]:
                    continue
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                    data = group.get(f"{key}_copy")
                    if data is not None:  # formatted when the group was built
                        copy.write(data)
                    else:
                        copy.set_types(types)
                        for row in rows:
                            copy.write_row(row)
            with conn.pipeline():
                if group["ids"]:
                    # One statement may not touch a row twice: a GPU reported twice
                    # in a group keeps its latest identity and its earliest first_seen
                    # (the GPU-set rule checks first_seen <= the set's time).
                    merged: dict[tuple, tuple] = {}
                    for row in group["ids"]:
                        key = (row[0], row[3])
                        first = merged[key][1] if key in merged else row[1]
                        merged[key] = (row[0], min(first, row[1]), *row[2:])
                    ids = list(merged.values())
                    conn.execute(UPSERT_IDENTITY_SQL, [list(column) for column in zip(*ids)])
                if group["sets"]:
                    conn.execute(INSERT_SETS_SQL, (_sets_json(group["sets"]),))
                if group["obs"]:
                    # Late rows (a spool replay) below the rollup's watermark mark
                    # it for recomputation; a no-op for rows above it.
                    rollups.invalidate(conn, min(o[0] for o in group["obs"]), mode=self.mode)
                if group["beat"] is not None:  # (the first part of a group carries it)
                    conn.execute(
                        "INSERT INTO observing_periods (collector_id, started_at, last_beat_at) VALUES (%s, %s, %s)"
                        " ON CONFLICT (collector_id, started_at)"
                        " DO UPDATE SET last_beat_at = greatest(observing_periods.last_beat_at,"
                        " EXCLUDED.last_beat_at)",
                        (self.collector_id, *group["beat"]))
                conn.execute("INSERT INTO ingest_batches (batch_id, rows) VALUES (%s, %s)",
                             (group["id"], len(group["obs"]) + sample_count(group)))
                conn.execute("COMMIT")
        except BaseException as err:
            # Whatever failed, the transaction must not stay open: the next
            # group's COMMIT would commit what this one had written.
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                try:
                    # rollback(), not a ROLLBACK statement: it also forgets the
                    # statements psycopg prepared in the failed pipeline, which
                    # the server never kept ("prepared statement _pg3_N does
                    # not exist" on every later group otherwise).
                    conn.rollback()
                except psycopg.Error:
                    conn.close()  # and the caller drops it
                    raise err from None
            if conn.closed or (isinstance(err, psycopg.OperationalError) and not _aborted(err)):
                raise  # the connection is dropped (_lost_connection)
            if not isinstance(err, psycopg.Error):
                if isinstance(err, (OverflowError, ValueError, TypeError)):
                    # A value psycopg cannot format for its column: the data is
                    # refused, like a constraint, and the part split by node.
                    raise psycopg.DataError(f"a row cannot be written: {err}") from err
                raise
            if not _aborted(err) and conn.execute(
                    "SELECT 1 FROM ingest_batches WHERE batch_id = %s", (group["id"],)).fetchone():
                return False  # written before (a retry after a lost COMMIT acknowledgement, a replay)
            raise
        return True

    # -- metrics --------------------------------------------------------------------

    def _register_metrics(self, registry: CollectorRegistry) -> None:
        depth = Gauge("fleetscope_writer_queue_batches", "Batches waiting in the writer's queue", registry=registry)
        depth.set_function(self.queue.qsize)
        spool_groups = Gauge("fleetscope_writer_spool_groups", "Write groups waiting in the on-disk spool",
                             registry=registry)
        spool_groups.set_function(lambda: len(self.spool))
        spool_bytes = Gauge("fleetscope_writer_spool_bytes", "Size of the on-disk spool", registry=registry)
        spool_bytes.set_function(lambda: self.spool.size_bytes)
        self._m_db_up = Gauge("fleetscope_writer_database_up", "1 while the writer is connected", registry=registry)
        self._m_rows = Counter("fleetscope_writer_rows_written", "Rows written, by table", ["table"],
                               registry=registry)
        self._m_groups = Counter("fleetscope_writer_groups", "Write groups (each part of a split group counts as"
                                 " one) by outcome: written, spooled, replayed,"
                                 " duplicate (already written, skipped), split (refused whole, then written node"
                                 " by node), rejected (a group, or one node's part of a split group, kept in"
                                 " spool/rejected),"
                                 " lost (could be neither written nor spooled: see the log)",
                                 ["result"], registry=registry)
        self._m_flush = Histogram("fleetscope_writer_flush_seconds", "Time to write one group",
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry)
        self._m_busy = Counter("fleetscope_writer_busy", "Commits refused because the queue stayed full",
                               registry=registry)


class _Chunks(pgcopy.Writer):
    """A COPY writer that keeps what the formatter hands it, in memory, to be sent later."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


def _formatting_cursor(conn: psycopg.Connection) -> psycopg.Cursor:
    """A cursor whose only use is formatting COPY data (``Writer._encode``), on the event loop.

    Its dumpers are created here, in the connecting thread (``set_types``
    makes one per column type; a row of each table is formatted besides):
    the only step of formatting that reads the connection (its encoding). After that, formatting uses the cursor's
    adapters alone and never the connection, so it can run while another
    thread writes on it; the cursor keeps formatting after the connection
    is gone.
    """
    cur = conn.cursor()
    warm = {OBSERVATION_TYPES: (datetime.now(timezone.utc), 1, True, "push", 1, 1.0, "x", "x"),
            SAMPLE_TYPES: (datetime.now(timezone.utc), 1, "GPU-x", 0, *[1.0] * 5, 1.0, *[1.0] * 3, 1, 1, 1, 1, False)}
    for types, row in warm.items():
        with psycopg.Copy(cur, binary=True, writer=_Chunks()) as copy:
            copy.set_types(types)
            copy.write_row(row)
    return cur


def _aborted(err: BaseException) -> bool:
    """A transaction the database rolled back in favour of another (SQLSTATE class 40: a deadlock, a
    serialization failure); psycopg raises these as OperationalError, but the connection is fine."""
    return isinstance(err, psycopg.Error) and (err.sqlstate or "").startswith("40")


def _answers(dsn: str) -> bool:
    """Whether the database answers a new connection's query within PROBE_TIMEOUT_S (or so)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=PROBE_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _close_quietly(conn: psycopg.Connection) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - the connection is already broken
        pass


# Which fields of a group hold times, by position, for the spool's JSON.
_TIMED = {"obs": (0,), "samples": (0,), "ids": (1, 2), "sets": (1,)}


def sample_rows(blocks: Iterable[tuple]) -> Iterator[tuple]:
    """The ``gpu_samples`` rows of a group's sample blocks, ``(time, node, samples)``, in order."""
    for t, node, samples in blocks:
        yield from map((t, node).__add__, samples)  # head + sample, without a Python frame per row


def sample_count(group: dict[str, Any]) -> int:
    return sum(len(block[2]) for block in group["samples"])


def _blocks(rows: Iterable[tuple]) -> list[tuple]:
    """The inverse of ``sample_rows``: consecutive rows of one time and node are one block."""
    blocks: list[tuple] = []
    for row in rows:
        head, sample = row[:2], tuple(row[2:])
        if blocks and blocks[-1][:2] == head:
            blocks[-1][2].append(sample)
        else:
            blocks.append((*head, [sample]))
    return blocks


def split_by_node(group: dict[str, Any]) -> list[dict[str, Any]]:
    """A group's rows as one group per node (in the order of their first observation), ids ``<id>/<node>``."""
    parts: dict[int, dict[str, Any]] = {}
    for row in group["obs"]:
        node = row[1]
        if node not in parts:
            parts[node] = {"id": f"{group['id']}/{node}", "obs": [], "samples": [], "ids": [], "sets": [],
                           "beat": group["beat"]}
        parts[node]["obs"].append(row)
    for key, at in (("samples", 1), ("ids", 0), ("sets", 0)):
        for row in group[key]:
            parts[row[at]][key].append(row)
    return list(parts.values())


def to_spool(group: dict[str, Any]) -> dict[str, Any]:
    """A group as JSON-able data: times as integer microseconds since the epoch (exact)."""
    beat = group["beat"]
    out: dict[str, Any] = {"id": group["id"], "beat": None if beat is None else [_us(t) for t in beat]}
    for key, positions in _TIMED.items():
        rows = sample_rows(group[key]) if key == "samples" else group[key]
        out[key] = [[_us(v) if i in positions else v for i, v in enumerate(row)] for row in rows]
    return out


def from_spool(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``to_spool``."""
    beat = data["beat"]
    group: dict[str, Any] = {"id": data["id"], "beat": None if beat is None else tuple(_dt(t) for t in beat)}
    for key, positions in _TIMED.items():
        group[key] = [tuple(_dt(v) if i in positions else v for i, v in enumerate(row)) for row in data[key]]
    group["samples"] = _blocks(group["samples"])
    group["obs_copy"] = group["samples_copy"] = None  # formatted when written
    return group


class _QueueAppender:
    """Appends batches of one unit of work, then puts them in the writer's queue."""

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
        if self._writer.spool.full and not self._writer.database_up:
            # The database is away and the spool holds SPOOL_MAX_BYTES: refuse
            # rather than accept what could not be kept (the sender retries).
            self._writer._m_busy.inc()
            raise StorageBusy("the database is unreachable and the writer's spool is full")
        writer = self._writer
        queue = writer.queue
        loop = asyncio.get_running_loop()
        for batch in self._pending:
            # Its group's settlement, for `settled` (issue 15).
            fut = writer._acks[id(batch)] = loop.create_future()
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # (retrieved: awaiting is optional)
            self._waiting.append(fut)
            try:
                queue.put_nowait(batch)
            except asyncio.QueueFull:
                try:
                    await asyncio.wait_for(queue.put(batch), timeout=writer.commit_timeout_s)
                except (asyncio.TimeoutError, TimeoutError):
                    writer._acks.pop(id(batch), None)
                    writer._m_busy.inc()
                    raise StorageBusy("the writer's queue stayed full") from None

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
