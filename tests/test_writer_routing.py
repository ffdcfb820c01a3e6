"""The writer's routing: a node's batches always go to its bucket's writer, and one writer held up or refused
never stops another.

A writer is held up on purpose: another session inserts, in an open
transaction, the observation row (node, time) that the writer's group is about
to write, so its COPY waits on the unique index until that session rolls back
(as a slow disk or a lock would hold a real one up).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import psycopg

from collector.writer import Writer
from tests.collectordata import ok_batch
from tests.test_writer_buckets import (
    Load,
    assert_each_writer_in_order,
    assert_written_exactly_once,
    commit,
    counted,
    new_nodes,
    observation_count,
    split_writer,
    until,
)

REFUSED = 999_999  # not a registered node: its GPUs cannot be registered, so its group is refused (odd: bucket 1)


class Blocker:
    """Holds the writing of one observation row (node, time) until ``release``."""

    def __init__(self, dsn: str, node: int, at: datetime) -> None:
        self.conn = psycopg.connect(dsn)
        self.conn.execute("INSERT INTO observations (time, node_id, ok, source, slot) VALUES (%s, %s, true, 'push', 0)",
                          (at, node))

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


def written(dsn: str, node: int, at: datetime) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM observations WHERE node_id = %s AND time = %s",
                            (node, at)).fetchone()[0] == 1


async def test_every_spooled_group_of_a_writer_holds_only_its_buckets_nodes_in_the_order_committed(open_tmp):
    writer = Writer("host=127.0.0.1 port=1 dbname=never-connected connect_timeout=1", spool_dir=open_tmp / "spool",
                    collector_id="c1", mode="plain", connections=4, heartbeat_s=60, flush_interval_s=0.01)
    t = datetime.now(timezone.utc)
    nodes = list(range(1, 41))
    async with writer:  # the database is unreachable: every group is spooled, named by its writer
        for k in range(5):
            await commit(writer, [ok_batch(n, t + timedelta(seconds=15 * k)) for n in nodes])
        await until(lambda: sum(len(json.loads(p.read_bytes())["obs"])
                                for p in (open_tmp / "spool").glob("*.group")) == 5 * len(nodes),
                    what="everything spooled")
        assert [writer.writer_of(n).index for n in nodes] == [n % 4 for n in nodes]
    seen: dict[int, list[tuple[int, str]]] = {}
    for path in sorted((open_tmp / "spool").glob("*.group")):
        owner = int(path.name.removesuffix(".group").split("-")[1])
        for row in json.loads(path.read_bytes())["obs"]:
            seen.setdefault(row[1], []).append((owner, row[0]))
    for node, rows in seen.items():
        assert {owner for owner, _ in rows} == {node % 4}, f"node {node} went to more than its bucket's writer"
        times = [at for _, at in rows]
        assert times == sorted(times) and len(times) == 5


async def test_a_writer_held_up_by_a_lock_does_not_hold_up_the_other(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    even, odd = [n for n in nodes if n % 2 == 0], [n for n in nodes if n % 2 == 1]
    writer = split_writer(dsn, open_tmp)
    await writer.__aenter__()
    blocker = None
    try:
        load = Load(writer, nodes)
        await load.round()
        await until(lambda: observation_count(dsn) == len(load.sent), what="the first round")
        held = load.start + timedelta(milliseconds=10)  # the next round's time
        blocker = await asyncio.to_thread(Blocker, dsn, even[0], held)
        for _ in range(3):
            await load.round()
            await asyncio.sleep(0.1)
        last = load.start + timedelta(milliseconds=30)
        await until(lambda: all(written(dsn, n, last) for n in odd), what="the other writer's last round")
        assert not any(written(dsn, n, held) for n in even), "writer 0 is held up"
        await asyncio.to_thread(blocker.release)
        await until(lambda: observation_count(dsn) == len(load.sent), what="everything written")
        assert counted(writer, "spooled") == 0
    finally:
        if blocker is not None:
            await asyncio.to_thread(blocker.release)
        await writer.close()
    assert_written_exactly_once(dsn, load.sent)
    assert_each_writer_in_order(dsn)


async def test_a_writer_whose_groups_are_refused_does_not_hold_up_the_other(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    t = datetime.now(timezone.utc)
    async with split_writer(dsn, open_tmp) as writer:
        for k in range(5):  # each round: writer 1's group holds the refused node, writer 0's does not
            await commit(writer, [ok_batch(n, t + timedelta(seconds=15 * k)) for n in [*nodes, REFUSED]])
        good = [(n, t + timedelta(seconds=15 * k)) for k in range(5) for n in nodes]
        await until(lambda: all(written(dsn, n, at) for n, at in good) and not len(writer.spool),
                    what="every good node written")
        assert writer.spool.rejected == counted(writer, "rejected") >= 1
        assert counted(writer, "split") == writer.spool.rejected, "only writer 1's groups were split"
    assert_written_exactly_once(dsn, good)
    with psycopg.connect(dsn) as conn:
        split = conn.execute("SELECT count(*) FROM ingest_batches WHERE batch_id ~ ':w0:[0-9]+/'").fetchone()[0]
    assert split == 0, "writer 0 wrote its groups whole"
