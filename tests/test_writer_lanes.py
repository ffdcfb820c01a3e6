"""The writer's lanes: each connection writes its part of the next group without waiting for the other's.

A part is held up on purpose: another session inserts, in an open
transaction, the observation row (node, time) that the part is about to
write, so the part's COPY waits on the unique index until that session rolls
back (as a slow disk or a lock would hold a real one up).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg

from collector.writer import Writer

from tests.collectordata import ok_batch
from tests.test_writer_parts import (
    Load,
    assert_each_lane_in_order,
    assert_written_exactly_once,
    commit,
    counted,
    new_nodes,
    observation_count,
    split_writer,
    terminate,
    until,
)

REFUSED = 999_999  # not a registered node: its GPUs cannot be registered, so its part is refused (odd: part 1)


class Blocker:
    """Holds the writing of one observation row (node, time) until ``release``."""

    held: list[Blocker] = []  # released in each test's cleanup, or the writer's close would wait for them

    def __init__(self, dsn: str, node: int, at: datetime) -> None:
        Blocker.held.append(self)
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


async def release_and_close(writer: Writer) -> None:
    """A test's cleanup: every blocker released (or close() would wait for the parts they hold), then the writer."""
    while Blocker.held:
        await asyncio.to_thread(Blocker.held.pop().release)
    await writer.close()


async def one_group_per_round(dsn, open_tmp, nodes, group_batches: int | None = None):
    """A split writer whose groups are one round of ``nodes`` each, after a first group written on both connections."""
    writer = split_writer(dsn, open_tmp, max_group_batches=group_batches or len(nodes))
    await writer.__aenter__()
    load = Load(writer, nodes)
    await load.round()
    await until(lambda: observation_count(dsn) == len(load.sent) and writer._spares, what="the first group")
    return writer, load


async def test_a_connection_writes_its_part_of_the_next_group_while_the_other_is_held_up(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    even, odd = [n for n in nodes if n % 2 == 0], [n for n in nodes if n % 2 == 1]
    writer, load = await one_group_per_round(dsn, open_tmp, nodes)
    try:
        held = load.start + timedelta(milliseconds=10)  # the next round's time
        blocker = await asyncio.to_thread(Blocker, dsn, even[0], held)
        await load.round()  # group k: its part 0 waits for the blocker
        await load.round()  # group k+1
        after = load.start + timedelta(milliseconds=20)
        await until(lambda: all(written(dsn, n, after) for n in odd), what="part 1 of group k+1")
        # Group k's part 0 is still held, and group k+1's part 0 is queued behind it.
        assert not any(written(dsn, n, t) for n in even for t in (held, after))
        await asyncio.to_thread(blocker.release)
        await until(lambda: observation_count(dsn) == len(load.sent), what="everything written")
        assert counted(writer, "spooled") == 0
    finally:
        await release_and_close(writer)
    assert_written_exactly_once(dsn, load.sent)
    assert_each_lane_in_order(dsn)


async def test_a_part_lost_with_its_connection_takes_the_part_queued_behind_it_to_the_spool_in_order(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    even, odd = [n for n in nodes if n % 2 == 0], [n for n in nodes if n % 2 == 1]
    writer, load = await one_group_per_round(dsn, open_tmp, nodes)
    try:
        main_pid = writer._conn.info.backend_pid
        held = load.start + timedelta(milliseconds=10)
        blocker = await asyncio.to_thread(Blocker, dsn, even[0], held)
        await load.round()  # group k: part 0 held on the main connection
        await load.round()  # group k+1: part 0 queued behind it, part 1 written on the spare
        await until(lambda: written(dsn, odd[0], load.start + timedelta(milliseconds=20)),
                    what="part 1 of group k+1")
        await asyncio.to_thread(terminate, dsn, main_pid)  # part 0 of group k fails with its connection
        await asyncio.to_thread(blocker.release)
        await load.run(5)
        await until(lambda: not len(writer.spool) and writer.database_up
                    and observation_count(dsn) == len(load.sent), what="the spool drained")
        assert counted(writer, "spooled") >= 2 and counted(writer, "replayed") >= 2
    finally:
        await release_and_close(writer)
    assert_written_exactly_once(dsn, load.sent)
    assert_each_lane_in_order(dsn)


async def test_a_part_refused_while_the_next_groups_part_holds_the_main_connection_is_salvaged_after_it(
        dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    even, odd = [n for n in nodes if n % 2 == 0], [n for n in nodes if n % 2 == 1]
    writer, load = await one_group_per_round(dsn, open_tmp, nodes, group_batches=len(nodes) + 1)
    try:
        t = datetime.now(timezone.utc) + timedelta(minutes=1)
        blocker = await asyncio.to_thread(Blocker, dsn, even[0], t + timedelta(seconds=15))
        # Group k holds the refused node (its part 1 is refused and must be
        # salvaged node by node on the main connection); group k+1's part 0 is
        # held on the main connection meanwhile.
        await commit(writer, [ok_batch(n, t) for n in [*nodes, REFUSED]])
        await commit(writer, [ok_batch(n, t + timedelta(seconds=15)) for n in [*nodes, REFUSED]])
        await until(lambda: len(writer.spool) >= 1, what="the refused part set aside")
        await asyncio.sleep(0.5)
        assert writer.spool.rejected == 0, "the salvage waited for the main connection"
        assert not written(dsn, odd[0], t), "part 1's good nodes are salvaged only after the held part"
        await asyncio.to_thread(blocker.release)
        good = [(n, t + timedelta(seconds=15 * k)) for k in range(2) for n in nodes]
        await until(lambda: not len(writer.spool) and all(written(dsn, n, at) for n, at in good),
                    what="the salvage and the spool drained")
        assert writer.spool.rejected == 2  # the refused node's part of each group
        assert counted(writer, "split") == 2
    finally:
        await release_and_close(writer)
    assert_written_exactly_once(dsn, load.sent + good)
    assert_each_lane_in_order(dsn)


async def test_a_group_built_while_a_split_group_before_it_was_refused_is_built_again_before_it_is_written(
        dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    even = [n for n in nodes if n % 2 == 0]
    writer, load = await one_group_per_round(dsn, open_tmp, nodes, group_batches=len(nodes) + 1)
    try:
        t = datetime.now(timezone.utc) + timedelta(minutes=1)
        blocker = await asyncio.to_thread(Blocker, dsn, even[0], t)
        # Group k: split, its part 0 held, its part 1 refused (the unknown
        # node's GPUs). Group k+1: the unknown node alone, one part, built
        # while k is in flight, when the writer still believes the node's
        # GPUs registered; it waits for k, which forgets that belief.
        await commit(writer, [ok_batch(n, t) for n in [*nodes, REFUSED]])
        await commit(writer, [ok_batch(REFUSED, t + timedelta(seconds=15))])
        await asyncio.sleep(0.5)
        await asyncio.to_thread(blocker.release)
        await until(lambda: not len(writer.spool) and writer.spool.rejected == 2
                    and all(written(dsn, n, t) for n in nodes), what="both groups settled")
    finally:
        await release_and_close(writer)
    assert not written(dsn, REFUSED, t + timedelta(seconds=15)), \
        "built again, group k+1 carried the node's GPUs and was refused like group k"
    assert_written_exactly_once(dsn, load.sent + [(n, t) for n in nodes])


async def test_with_four_connections_a_group_whose_parts_hold_other_buckets_waits_for_the_one_before(
        dsn, open_tmp):
    # A group has a part per non-empty node bucket (node % 4): groups with
    # buckets {0, 1, 2} and {0, 2, 3} both have three parts, but their second
    # parts hold different nodes. Chained by position, the second group's
    # bucket-2 part would be written behind the first group's bucket-1 part,
    # not behind its held bucket-2 part.
    nodes = new_nodes(dsn, 8)
    first = [n for n in nodes if n % 4 in (0, 1, 2)]
    second = [n for n in nodes if n % 4 in (0, 2, 3)]
    bucket_2 = next(n for n in nodes if n % 4 == 2)
    writer = Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain", connections=4,
                    parallel_min_batches=4, heartbeat_s=0.2, flush_interval_s=0.05, max_group_batches=6)
    t = datetime.now(timezone.utc) + timedelta(minutes=1)
    sent = []
    async with writer:
        warm = [ok_batch(n, t - timedelta(seconds=15)) for n in first]
        await commit(writer, warm)
        sent += [(b.node_id, b.received_at) for b in warm]
        await until(lambda: observation_count(dsn) == len(sent) and len(writer._spares) == 2, what="warm-up")
        blocker = await asyncio.to_thread(Blocker, dsn, bucket_2, t)
        try:
            await commit(writer, [ok_batch(n, t) for n in first])
            await commit(writer, [ok_batch(n, t + timedelta(seconds=15)) for n in second])
            sent += [(n, t) for n in first] + [(n, t + timedelta(seconds=15)) for n in second]
            await asyncio.sleep(0.5)
            assert not written(dsn, bucket_2, t + timedelta(seconds=15)), "the node's later rows went first"
        finally:
            await asyncio.to_thread(blocker.release)
        await until(lambda: observation_count(dsn) == len(sent), what="everything written")
    assert_written_exactly_once(dsn, sent)
