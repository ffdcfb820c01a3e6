"""A write group: the rows one transaction writes, and that transaction.

A bucket writer (collector/bucket_writer.py) turns the batches it collected
into one ``Group`` (collector/builder.py) and writes it with ``write_group``
in one transaction: observations and GPU samples with binary COPY, then the
identity upserts, the GPU-set changes, the collector's heartbeat and the
group's id in ``ingest_batches``. A group that cannot be written is spooled
(collector/spool.py holds its JSON form) and replayed exactly as it was built.

Rows are named tuples in their table's column order, so psycopg's COPY takes
them as they are; GPU samples are kept as one ``SampleBlock`` per batch (a
batch's time and node, then its samples), each sample a row once the block's
time and node lead it (``sample_rows``): a list of 16,000 row tuples per group
cost a fifth of the writer's CPU (py-spy --gil, bench/bench_writer.py).
"""

from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

import psycopg
from psycopg.pq import TransactionStatus

from fleetscope import rollups

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

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
# see its own rows, so a set equal to the one before it for the same node in
# the same group is left out (sets_json).
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
UPSERT_BEAT_SQL = """
INSERT INTO observing_periods (collector_id, started_at, last_beat_at) VALUES (%s, %s, %s)
ON CONFLICT (collector_id, started_at)
DO UPDATE SET last_beat_at = greatest(observing_periods.last_beat_at, EXCLUDED.last_beat_at)
"""


class Observation(NamedTuple):
    """One row of ``observations``, in its column order."""

    time: datetime
    node_id: int
    ok: bool
    source: str
    slot: int
    latency_ms: float | None
    error: str | None
    collector_id: str


class SampleBlock(NamedTuple):
    """What one batch adds to ``gpu_samples``: each sample a row behind the block's time and node."""

    time: datetime
    node_id: int
    samples: Sequence[tuple]


# One row of ``gpus``: the node, first and last seen, then IDENTITY_COLUMNS.
IdentityRow = namedtuple("IdentityRow", ("node_id", "first_seen", "last_seen", *IDENTITY_COLUMNS))


class SetRow(NamedTuple):
    """A node's GPU set (sorted healthy UUIDs, lost UUIDs) since ``since``: a row of ``node_gpu_sets``."""

    node_id: int
    since: datetime
    healthy: list[str]
    lost: list[str]


@dataclass(frozen=True, slots=True)
class Beat:
    """The collector's heartbeat: it has been observing since ``period_start``, and still was ``at``."""

    period_start: datetime
    at: datetime


@dataclass(frozen=True, slots=True)
class Encoded:
    """A group's observation and sample rows as binary COPY data, formatted when the group was built."""

    observations: bytes
    samples: bytes


@dataclass(slots=True)
class Group:
    """The rows of one transaction. ``id`` goes to ``ingest_batches`` with the rows: written once."""

    id: str
    observations: list[Observation] = field(default_factory=list)
    samples: list[SampleBlock] = field(default_factory=list)
    identities: list[IdentityRow] = field(default_factory=list)
    sets: list[SetRow] = field(default_factory=list)
    beat: Beat | None = None
    # None: not formatted (built for the spool, or without a connection): the COPY formats the rows.
    encoded: Encoded | None = field(default=None, compare=False, repr=False)

    @property
    def sample_count(self) -> int:
        return sum(len(block.samples) for block in self.samples)

    @property
    def row_count(self) -> int:
        return len(self.observations) + self.sample_count

    @property
    def nodes(self) -> set[int]:
        """Every node with a row here (a telemetry-only batch has samples and no observation)."""
        return {row.node_id for row in self.observations} | {block.node_id for block in self.samples}


def sample_rows(blocks: Iterable[SampleBlock]) -> Iterator[tuple]:
    """The ``gpu_samples`` rows of sample blocks, in order."""
    for t, node, samples in blocks:
        yield from map((t, node).__add__, samples)  # head + sample, without a Python frame per row


def sample_blocks(rows: Iterable[Sequence]) -> list[SampleBlock]:
    """The inverse of ``sample_rows``: consecutive rows of one time and node are one block."""
    blocks: list[SampleBlock] = []
    for row in rows:
        if blocks and blocks[-1].time == row[0] and blocks[-1].node_id == row[1]:
            blocks[-1].samples.append(tuple(row[2:]))
        else:
            blocks.append(SampleBlock(row[0], row[1], [tuple(row[2:])]))
    return blocks


def split_by_node(group: Group) -> list[Group]:
    """A group's rows as one group per node (in the order of their first observation), ids ``<id>/<node>``.

    Each keeps the group's heartbeat (an idempotent upsert).
    """
    parts: dict[int, Group] = {}

    def part(node_id: int) -> Group:
        if node_id not in parts:
            parts[node_id] = Group(f"{group.id}/{node_id}", beat=group.beat)
        return parts[node_id]

    for row in group.observations:
        part(row.node_id).observations.append(row)
    for block in group.samples:  # (a telemetry-only node has samples and no observation)
        part(block.node_id).samples.append(block)
    for ident in group.identities:
        part(ident.node_id).identities.append(ident)
    for row in group.sets:
        part(row.node_id).sets.append(row)
    return list(parts.values())


def sets_json(sets: list[SetRow]) -> str:
    """A group's set rows as the JSON INSERT_SETS_SQL reads."""
    rows, last = [], {}
    for node, since, healthy, lost in sets:
        if last.get(node) == (healthy, lost):
            continue  # equal to this node's previous set in the group: the statement would not see it
        last[node] = (healthy, lost)
        rows.append({"node": node, "since": since.isoformat(), "healthy": healthy, "lost": lost})
    return json.dumps(rows)


def aborted(err: BaseException) -> bool:
    """A transaction the database rolled back in favour of another (SQLSTATE class 40: a deadlock, a
    serialization failure); psycopg raises these as OperationalError, but the connection is fine."""
    return isinstance(err, psycopg.Error) and (err.sqlstate or "").startswith("40")


def write_group(conn: psycopg.Connection, group: Group, *, collector_id: str, mode: str) -> bool:
    """Write a group in one transaction (blocking: a worker thread calls it); False if its id was already written.

    Six round trips: BEGIN, two per COPY, and one for everything else
    (psycopg's pipeline mode; COPY itself cannot be pipelined). The group's
    id is recorded last, with the COMMIT, instead of checked in a round trip
    of its own first: a group already written then fails (its observations'
    unique key, or the id's), is rolled back, and is found in
    ``ingest_batches``. A group without rows (a heartbeat alone) records no
    id: its upsert is idempotent.
    """
    try:
        conn.execute("BEGIN")
        cur = conn.cursor()
        encoded = group.encoded
        for table, columns, types, rows, data in (
                ("observations", OBSERVATION_COLUMNS, OBSERVATION_TYPES, group.observations,
                 encoded and encoded.observations),
                ("gpu_samples", SAMPLE_COLUMNS, SAMPLE_TYPES, group.samples, encoded and encoded.samples)):
            if not rows:
                continue
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                if data is not None:  # formatted when the group was built
                    copy.write(data)
                else:
                    copy.set_types(types)
                    for row in (sample_rows(rows) if table == "gpu_samples" else rows):
                        copy.write_row(row)
        with conn.pipeline():
            if group.identities:
                # One statement may not touch a row twice: a GPU reported twice
                # in a group keeps its latest identity and its earliest first_seen
                # (the GPU-set rule checks first_seen <= the set's time).
                merged: dict[tuple, tuple] = {}
                for row in group.identities:
                    key = (row.node_id, row.gpu_uuid)
                    first = merged[key][1] if key in merged else row.first_seen
                    merged[key] = (row[0], min(first, row.first_seen), *row[2:])
                conn.execute(UPSERT_IDENTITY_SQL, [list(column) for column in zip(*merged.values())])
            if group.sets:
                conn.execute(INSERT_SETS_SQL, (sets_json(group.sets),))
            if group.observations:
                # Late rows (a spool replay) below the rollup's watermark mark
                # it for recomputation; a no-op for rows above it.
                rollups.invalidate(conn, min(o.time for o in group.observations), mode=mode)
            if group.beat is not None:
                conn.execute(UPSERT_BEAT_SQL, (collector_id, group.beat.period_start, group.beat.at))
            rows = group.row_count
            if rows:
                conn.execute("INSERT INTO ingest_batches (batch_id, rows) VALUES (%s, %s)", (group.id, rows))
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
        if conn.closed or (isinstance(err, psycopg.OperationalError) and not aborted(err)):
            raise  # the connection is dropped
        if not isinstance(err, psycopg.Error):
            if isinstance(err, (OverflowError, ValueError, TypeError)):
                # A value psycopg cannot format for its column: the data is
                # refused, like a constraint, and the group split by node.
                raise psycopg.DataError(f"a row cannot be written: {err}") from err
            raise
        if not aborted(err) and conn.execute(
                "SELECT 1 FROM ingest_batches WHERE batch_id = %s", (group.id,)).fetchone():
            return False  # written before (a retry after a lost COMMIT acknowledgement, a replay)
        raise
    return True
