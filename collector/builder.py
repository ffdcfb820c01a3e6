"""The group builder: batches -> one ``Group``, with the per-node caches that keep groups small.

Each bucket writer (collector/bucket_writer.py) has its own builder, and a
node's batches always reach the same writer, so these caches are that
writer's alone: no other task reads or changes them.

- identities: a node's GPU identities are upserted when they change, and
  otherwise every IDENTITY_REFRESH_S (which keeps ``gpus.last_seen`` fresh);
- GPU sets: a node's set is written when it differs from the last one this
  process wrote or read (loaded from the database for the writer's bucket
  when it connects), and otherwise every SET_REFRESH_S;
- steady: what a node's last payload said of its GPUs, and until when both
  caches above are known to agree with it: one comparison per batch in the
  usual case.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from operator import itemgetter
from typing import TYPE_CHECKING

import psycopg
from psycopg import copy as pgcopy

from collector.group import (
    OBSERVATION_TYPES,
    SAMPLE_TYPES,
    Beat,
    Encoded,
    Group,
    IdentityRow,
    Observation,
    SampleBlock,
    SetRow,
    sample_rows,
)
# Re-upsert an unchanged identity this often (keeps last_seen fresh); its
# definition is fleetscope/states.py's, which duplicate_uuid's window follows.
from fleetscope.states import IDENTITY_REFRESH_S

if TYPE_CHECKING:
    from collections.abc import Iterable

    from collector.ingest import Batch

# A node's GPU set is compared with this process's last one; with several
# replicas receiving one node's pushes another may have written a newer set,
# so an unchanged set is offered again this often (the insert itself skips a
# set equal to the latest in the database).
SET_REFRESH_S = 60

_UUID = itemgetter(0)  # of a GpuSample: gpu_uuid
_UUID_AND_INDEX = itemgetter(0, 1)  # gpu_uuid, gpu_index
_UUID_INDEX_LOST = itemgetter(0, 1, 15)  # gpu_uuid, gpu_index, lost
_NO_IDENTITY = (None,) * (len(IdentityRow._fields) - 5)


class GroupBuilder:
    """Builds one bucket writer's groups; its caches cover that writer's nodes only."""

    def __init__(self, collector_id: str) -> None:
        self.collector_id = collector_id
        self._identities: dict[int, tuple[tuple, float]] = {}  # node -> (its last identities, when written)
        # node -> ((healthy, lost), when): the last set this process wrote or read;
        # None until loaded (the database was down when the writer started).
        self._sets: dict[int, tuple[tuple[tuple[str, ...], tuple[str, ...]], float]] | None = None
        # node -> (what its last payload said of its GPUs, until when the two caches agree with it).
        self._steady: dict[int, tuple[tuple, float]] = {}
        # Formats a group's COPY data as it is built (``_encode``); made on the first connection.
        self._formatter: psycopg.Cursor | None = None

    @property
    def formatting(self) -> bool:
        return self._formatter is not None

    def knows(self, node: int) -> bool:
        """Whether a cache holds anything of ``node`` (it is forgotten after a refusal)."""
        return node in self._identities or node in self._steady or node in (self._sets or {})

    def connected(self, conn: psycopg.Connection, bucket: int, buckets: int) -> None:
        """A new connection of the writer of ``bucket`` (of ``buckets``): load its nodes' GPU sets, once, and
        make the formatter (in the connecting thread)."""
        if self._sets is None:
            rows = conn.execute(
                "SELECT DISTINCT ON (node_id) node_id, healthy, lost FROM node_gpu_sets"
                " WHERE node_id %% %s = %s ORDER BY node_id, since DESC", (buckets, bucket)).fetchall()
            mono = time.monotonic()
            self._sets = {r[0]: ((tuple(sorted(r[1])), tuple(r[2])), mono) for r in rows}
        if self._formatter is None:
            self._formatter = _formatting_cursor(conn)

    def forget(self, nodes: Iterable[int]) -> None:
        """Drop what the caches say of ``nodes`` (their group was not written): their sets and identities are
        offered again."""
        for node in nodes:
            self._steady.pop(node, None)
            self._identities.pop(node, None)
            if self._sets is not None:
                self._sets.pop(node, None)

    def build(self, batches: list[Batch], group_id: str, beat: Beat | None, *, encode: bool) -> Group:
        """The group of ``batches``; with ``encode``, its COPY data formatted now (it is about to be written)."""
        observations, blocks, identities, sets = [], [], [], []
        mono = time.monotonic()
        cid = self.collector_id
        steady = self._steady
        for b in batches:
            t, node, p = b.received_at, b.node_id, b.payload
            if b.telemetry_only:
                if p is not None:
                    blocks.append(SampleBlock(t, node, p.samples))
                continue
            observations.append(Observation(t, node, b.ok, b.source, b.slot, b.latency_ms, b.error, cid))
            if not b.ok or p is None:
                continue
            blocks.append(SampleBlock(t, node, p.samples))
            # The usual case: the node says what it said last time, and both
            # caches agree with it (one C-level comparison, no work per GPU).
            key = (tuple(p.identities), tuple(map(_UUID_INDEX_LOST, p.samples)), p.lost)
            known = steady.get(node)
            if known is not None and known[0] == key and mono < known[1]:
                continue
            ident_until = self._identity_rows(b, t, mono, identities)
            set_until = self._set_row(b, t, mono, sets)
            steady[node] = (key, min(ident_until, set_until))
        group = Group(group_id, observations, blocks, identities, sets, beat)
        if encode and self._formatter is not None:
            group.encoded = self._encode(group)
        return group

    def _encode(self, group: Group) -> Encoded | None:
        """The group's rows as binary COPY data, formatted on the event loop.

        Formatted inside the COPY instead, in the writing thread, the rows
        wait for the GIL while the event loop builds the other writers'
        groups, and the database backend waits for them (ClientRead in
        pg_stat_activity; a 16,000-row COPY took 45-90 ms instead of 35-40).
        None for a value that cannot be formatted: the COPY meets it, and the
        database refuses the group (which is then split by node).
        """
        try:
            return Encoded(_format(self._formatter, group.observations, OBSERVATION_TYPES),
                           _format(self._formatter, sample_rows(group.samples), SAMPLE_TYPES))
        except Exception:  # noqa: BLE001 - see above
            return None

    def _identity_rows(self, b: Batch, t: datetime, mono: float, out: list[IdentityRow]) -> float:
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
            out.append(IdentityRow(b.node_id, t, t, gpu_uuid, indexes.get(gpu_uuid),
                                   *(ident[1:] if ident else _NO_IDENTITY)))
        return mono + IDENTITY_REFRESH_S

    def _set_row(self, b: Batch, t: datetime, mono: float, out: list[SetRow]) -> float:
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
        # Without the cache (the database was down when the writer started)
        # every set is written: a repeated set is a redundant row, never a
        # wrong one. Sorted, so a set compares equal to the same set written
        # by another process.
        out.append(SetRow(b.node_id, t, list(current[0]), list(current[1])))
        return mono + SET_REFRESH_S if self._sets is not None else mono


class _Chunks(pgcopy.Writer):
    """A COPY writer that keeps what the formatter hands it, in memory, to be sent later."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


def _format(cursor: psycopg.Cursor, rows: Iterable[tuple], types: tuple[str, ...]) -> bytes:
    chunks = _Chunks()
    with psycopg.Copy(cursor, binary=True, writer=chunks) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
    return b"".join(chunks.data)


def _formatting_cursor(conn: psycopg.Connection) -> psycopg.Cursor:
    """A cursor whose only use is formatting COPY data (``GroupBuilder._encode``), on the event loop.

    Its dumpers are created here, in the connecting thread (``set_types``
    makes one per column type; a row of each table is formatted besides):
    the only step of formatting that reads the connection (its encoding).
    After that, formatting uses the cursor's adapters alone and never the
    connection, so it can run while another thread writes on it; the cursor
    keeps formatting after the connection is gone.
    """
    cur = conn.cursor()
    now = datetime.now(timezone.utc)
    _format(cur, [(now, 1, True, "push", 1, 1.0, "x", "x")], OBSERVATION_TYPES)
    _format(cur, [(now, 1, "GPU-x", 0, *[1.0] * 5, 1.0, *[1.0] * 3, 1, 1, 1, 1, False)], SAMPLE_TYPES)
    return cur
