"""The writer's buckets: two writers, one per connection, each node's rows on one of them: every row exactly once."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from collector.builder import GroupBuilder
from collector.group import sample_rows, write_group
from collector.spool import Spool, from_spool, to_spool
from collector.writer import StorageBusy, Writer
from fleetscope.registry import create_operator, register_node
from tests.collectordata import failed_batch, ok_batch

GPUS = 8  # GPU samples per ok batch of the recorded payload


def new_nodes(dsn: str, count: int) -> list[int]:
    """``count`` registered nodes of one new operator; consecutive ids, so both parities (both writers)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, f"op-{uuid.uuid4().hex[:8]}")
        return [register_node(conn, operator_id=operator_id, name=f"n{i}").node_id for i in range(count)]


def split_writer(dsn: str, open_tmp, **options) -> Writer:
    """A writer of two buckets (even and odd nodes), each on its own connection."""
    options = {"heartbeat_s": 0.2, "flush_interval_s": 0.05, **options}
    return Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain", connections=2, **options)


async def commit(writer: Writer, batches) -> None:
    appender = writer.appender()
    for b in batches:
        appender.append(b)
    await appender.commit()


class Load:
    """Rounds of one ok batch per node, each round one commit (a group for each writer), and what was sent."""

    def __init__(self, writer: Writer, nodes: list[int]) -> None:
        self.writer, self.nodes = writer, nodes
        self.start = datetime.now(timezone.utc)
        self.sent: list[tuple[int, datetime]] = []
        self.rounds = 0

    async def round(self) -> None:
        t = self.start + timedelta(milliseconds=10 * self.rounds)
        self.rounds += 1
        batches = [ok_batch(node, t) for node in self.nodes]
        await commit(self.writer, batches)
        self.sent += [(b.node_id, b.received_at) for b in batches]

    async def run(self, rounds: int, pause_s: float = 0.01) -> None:
        for _ in range(rounds):
            await self.round()
            await asyncio.sleep(pause_s)

    async def until_reconnected(self, index: int, old_pid: int) -> None:
        """Send rounds until writer ``index`` has a connection other than ``old_pid``."""
        for _ in range(100):
            conn = self.writer.writers[index].conn
            if conn is not None and not conn.closed and conn.info.backend_pid != old_pid:
                return
            await self.round()
            await asyncio.sleep(0.1)
        raise AssertionError("no new connection after 100 rounds")


async def until(condition, *, timeout_s: float = 20.0, what: str = "") -> None:
    """Poll ``condition`` (a blocking callable, run in a thread) until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        await asyncio.sleep(0.05)


def observation_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM observations").fetchone()[0]


def assert_written_exactly_once(dsn: str, sent: list[tuple[int, datetime]]) -> None:
    """Every sent (node, time) is one observation with its GPU samples, and nothing else is there."""
    with psycopg.connect(dsn) as conn:
        obs = Counter(conn.execute("SELECT node_id, time FROM observations").fetchall())
        samples = {(node, t): n for node, t, n in conn.execute(
            "SELECT node_id, time, count(*) FROM gpu_samples GROUP BY 1, 2")}
    assert obs == Counter(sent), "every accepted observation exactly once"
    assert samples == {key: GPUS for key in sent}, "every accepted observation's samples exactly once"


def group_ids(dsn: str) -> dict[str, int]:
    """ingest_batches' ids of the groups written (``<boot>:w<writer>:<seq>``) and their row counts."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT batch_id, rows FROM ingest_batches WHERE batch_id ~ ':w[0-9]+:[0-9]+$'"))


def rows_by_writer(dsn: str) -> dict[str, int]:
    """Rows written by each writer (``w0``, ``w1``), its groups' and its salvaged nodes' together."""
    out: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for batch_id, rows in conn.execute("SELECT batch_id, rows FROM ingest_batches"):
            writer = batch_id.split("/")[0].split(":")[-2]
            out[writer] = out.get(writer, 0) + rows
    return out


def assert_each_writer_in_order(dsn: str) -> None:
    """A node's rows are written by one writer, in order: each writer wrote its groups in the order it built them."""
    writers: dict[str, list[int]] = {}
    with psycopg.connect(dsn) as conn:
        for (batch_id,) in conn.execute("SELECT batch_id FROM ingest_batches WHERE batch_id ~ ':w[0-9]+:[0-9]+$'"
                                        " ORDER BY written_at, batch_id"):
            _, writer, seq = batch_id.rsplit(":", 2)
            writers.setdefault(writer, []).append(int(seq))
    for writer, seqs in writers.items():
        assert seqs == sorted(seqs), f"writer {writer} wrote groups out of order: {seqs}"


def spooled_observations(writer: Writer) -> int:
    return sum(len(json.loads(path.read_bytes())["obs"]) for path in writer.spool.directory.glob("*.group"))


def backend_pid(writer: Writer, index: int) -> int:
    return writer.writers[index].conn.info.backend_pid


def terminate(dsn: str, pid: int) -> None:
    """End one backend from another connection, as an administrator or a pooler's timeout would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def counted(writer: Writer, result: str) -> float:
    return writer._m_groups.labels(result)._value.get()




async def test_a_commit_of_many_nodes_is_written_by_both_writers_each_its_own_nodes(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    t = datetime.now(timezone.utc)
    batches = [ok_batch(node, t + timedelta(seconds=15 * k)) for k in range(2) for node in nodes]
    async with split_writer(dsn, open_tmp) as writer:
        assert [writer.writer_of(n).index for n in nodes] == [n % 2 for n in nodes]
        await commit(writer, batches)  # one commit: six batches for each writer
        await until(lambda: observation_count(dsn) == len(batches), what="the batches written")
        assert writer.database_up
    assert_written_exactly_once(dsn, [(b.node_id, b.received_at) for b in batches])
    per_writer = 2 * 3 * (1 + GPUS)  # two batches of three nodes, each an observation and its samples
    assert rows_by_writer(dsn) == {"w0": per_writer, "w1": per_writer}
    with psycopg.connect(dsn) as conn:
        periods = conn.execute("SELECT started_at, last_beat_at FROM observing_periods"
                               " WHERE collector_id = 'c1'").fetchall()
    assert len(periods) == 1 and periods[0][0] <= periods[0][1]


async def test_the_heartbeat_is_written_while_no_batch_comes_and_ends_where_the_writer_stopped(dsn, open_tmp):
    async with split_writer(dsn, open_tmp, heartbeat_s=0.1) as writer:
        await asyncio.sleep(0.5)
        with psycopg.connect(dsn) as conn:
            first = conn.execute("SELECT started_at, last_beat_at FROM observing_periods"
                                 " WHERE collector_id = 'c1'").fetchall()
        assert len(first) == 1 and first[0][1] > first[0][0], "beats every 0.1 s, no batch"
        closing = datetime.now(timezone.utc)
    stopped = datetime.now(timezone.utc)
    with psycopg.connect(dsn) as conn:
        (started, last), = conn.execute("SELECT started_at, last_beat_at FROM observing_periods"
                                        " WHERE collector_id = 'c1'").fetchall()
    # The last beat is the one close() hands every writer: stamped while closing, not a beat before.
    assert started == first[0][0] and closing <= last <= stopped
    assert group_ids(dsn) == {}, "a heartbeat alone records no group id"


async def test_a_database_killed_during_load_loses_nothing_and_duplicates_nothing(own_server, open_tmp):
    server, dsn = own_server
    nodes = new_nodes(dsn, 6)
    async with split_writer(dsn, open_tmp) as writer:
        load = Load(writer, nodes)
        await load.run(20)
        await asyncio.to_thread(server.stop, immediate=True)  # a crash, not a clean shutdown
        await load.run(30)
        assert not writer.database_up and len(writer.spool) > 0
        await asyncio.to_thread(server.ensure_running)
        await load.run(20)
        await until(lambda: not len(writer.spool) and writer.database_up
                    and observation_count(dsn) == len(load.sent), what="the spool drained")
        assert counted(writer, "replayed") > 0
    assert_written_exactly_once(dsn, load.sent)
    assert set(rows_by_writer(dsn)) == {"w0", "w1"}
    assert_each_writer_in_order(dsn)


async def test_a_connection_terminated_between_groups_loses_nothing_and_only_its_writer_reconnects(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    async with split_writer(dsn, open_tmp) as writer:
        load = Load(writer, nodes)
        await load.round()
        await until(lambda: observation_count(dsn) == len(load.sent), what="the first groups")
        other, old_pid = writer.writers[0].conn, backend_pid(writer, 1)
        await asyncio.to_thread(terminate, dsn, old_pid)
        await load.round()  # writer 1's group fails on the dead connection: spooled, replayed on a new one
        await load.until_reconnected(1, old_pid)  # after the backoff
        await until(lambda: not len(writer.spool) and observation_count(dsn) == len(load.sent),
                    what="the group lost with the connection replayed")
        assert counted(writer, "spooled") >= 1 and counted(writer, "replayed") >= 1
        assert writer.writers[0].conn is other, "the other writer's connection stays up"
    assert_written_exactly_once(dsn, load.sent)
    assert_each_writer_in_order(dsn)


async def test_a_connection_terminated_during_load_loses_nothing_and_the_other_stays_up(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    async with split_writer(dsn, open_tmp) as writer:
        load = Load(writer, nodes)
        await load.run(5)
        await until(lambda: observation_count(dsn) == len(load.sent), what="the first groups")
        other, old_pid = writer.writers[0].conn, backend_pid(writer, 1)
        loading = asyncio.create_task(load.run(60, pause_s=0.02))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(terminate, dsn, old_pid)
        await loading
        await load.until_reconnected(1, old_pid)
        await until(lambda: not len(writer.spool) and observation_count(dsn) == len(load.sent),
                    what="everything written")
        assert counted(writer, "spooled") >= 1
        assert writer.writers[0].conn is other and writer.database_up
    assert_written_exactly_once(dsn, load.sent)


@pytest.mark.parametrize("refused", [999999, 999998], ids=["in-bucket-1", "in-bucket-0"])
async def test_a_refused_node_is_kept_aside_by_its_writer_and_every_other_node_is_written_once(
        dsn, open_tmp, refused):
    nodes = new_nodes(dsn, 6)
    t = datetime.now(timezone.utc)
    # Node `refused` does not exist: its GPUs cannot be registered, so its writer's group is refused whole.
    batches = [ok_batch(node, t + timedelta(seconds=15 * k)) for k in range(2) for node in [*nodes, refused]]
    async with split_writer(dsn, open_tmp) as writer:
        await commit(writer, batches)
        good = [b for b in batches if b.node_id != refused]
        await until(lambda: observation_count(dsn) == len(good) and writer.spool.rejected == 1,
                    what="the refused group salvaged")
        assert len(writer.spool) == 0
        assert counted(writer, "split") == 1 and counted(writer, "rejected") == 1
    assert_written_exactly_once(dsn, [(b.node_id, b.received_at) for b in good])
    bucket = refused % 2
    with psycopg.connect(dsn) as conn:
        salvaged = dict(conn.execute("SELECT split_part(batch_id, '/', 2), rows FROM ingest_batches"
                                     " WHERE batch_id ~ %s", (f":w{bucket}:[0-9]+/",)))
    same_bucket = [n for n in nodes if n % 2 == bucket]
    assert salvaged == {str(n): 2 * (1 + GPUS) for n in same_bucket}, "its writer's other nodes, node by node"
    assert rows_by_writer(dsn)[f"w{1 - bucket}"] == 2 * 3 * (1 + GPUS), "the other writer's group, as usual"
    (kept,) = (open_tmp / "spool" / "rejected").glob("*.group")
    kept = json.loads(kept.read_text())
    assert {row[1] for row in kept["obs"]} == {refused} and len(kept["obs"]) == 2
    assert len(kept["samples"]) == 2 * GPUS


async def test_a_group_refused_after_its_writer_lost_its_connection_is_salvaged_on_replay(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    async with split_writer(dsn, open_tmp) as writer:
        load = Load(writer, nodes)
        await load.round()
        await until(lambda: observation_count(dsn) == len(load.sent), what="the first groups")
        # Writer 1's connection dies; its next group (with the refused node) is spooled, then refused on replay.
        await asyncio.to_thread(terminate, dsn, backend_pid(writer, 1))
        t = load.start + timedelta(seconds=60)
        await commit(writer, [ok_batch(node, t) for node in [*nodes, 999999]])
        load.sent += [(node, t) for node in nodes]
        await until(lambda: not len(writer.spool) and writer.spool.rejected == 1
                    and observation_count(dsn) == len(load.sent), what="the spool drained")
        assert counted(writer, "split") == 1
    assert_written_exactly_once(dsn, load.sent)


async def test_a_writer_started_while_the_database_is_down_writes_everything_once_it_is_back(own_server, open_tmp):
    server, dsn = own_server
    nodes = new_nodes(dsn, 6)
    await asyncio.to_thread(server.stop)
    async with split_writer(dsn, open_tmp) as writer:
        assert not writer.database_up and not any(w.builder.formatting for w in writer.writers)
        load = Load(writer, nodes)
        await load.run(10)
        await until(lambda: spooled_observations(writer) == len(load.sent), what="the groups spooled")
        await asyncio.to_thread(server.ensure_running)
        await load.run(10)
        await until(lambda: not len(writer.spool) and writer.database_up
                    and observation_count(dsn) == len(load.sent), what="the spool drained")
        assert all(w.builder.formatting for w in writer.writers)
        await load.run(5)  # groups formatted as they are built, from now on
        await until(lambda: observation_count(dsn) == len(load.sent), what="the last groups")
    assert_written_exactly_once(dsn, load.sent)
    assert set(rows_by_writer(dsn)) == {"w0", "w1"}
    assert_each_writer_in_order(dsn)


def test_groups_built_before_any_connection_write_the_same_rows_as_groups_formatted_when_built(dsn):
    nodes = new_nodes(dsn, 12)
    t = datetime.now(timezone.utc)
    builder = GroupBuilder("c1")
    unformatted = builder.build([ok_batch(node, t) for node in nodes[:6]], "c1:1:w0:1", None, encode=True)
    assert unformatted.encoded is None  # no connection yet: nothing to format with
    with psycopg.connect(dsn, autocommit=True) as conn:
        builder.connected(conn, 0, 1)
        formatted = builder.build([ok_batch(node, t) for node in nodes[6:]], "c1:1:w0:2", None, encode=True)
        assert formatted.encoded.observations and formatted.encoded.samples
        assert write_group(conn, unformatted, collector_id="c1", mode="plain")
        assert write_group(conn, formatted, collector_id="c1", mode="plain")
    assert_written_exactly_once(dsn, [(node, t) for node in nodes])
    with psycopg.connect(dsn) as conn:
        def rows(node: int) -> list[tuple]:
            return conn.execute("SELECT o.time, o.ok, o.source, o.slot, o.latency_ms, o.error, o.collector_id,"
                                " s.gpu_uuid, s.gpu_index, s.gpu_util, s.mem_copy_util, s.fb_used_mib, s.fb_free_mib,"
                                " s.power_w, s.energy_mj, s.temp_c, s.sm_clock_mhz, s.mem_clock_mhz, s.pcie_replay,"
                                " s.ecc_sbe, s.ecc_dbe, s.xid_last, s.lost"
                                "  FROM observations o JOIN gpu_samples s USING (node_id, time)"
                                " WHERE o.node_id = %s ORDER BY s.gpu_uuid", (node,)).fetchall()
        for a, b in zip(nodes[:6], nodes[6:]):
            assert rows(a) == rows(b) and len(rows(a)) == GPUS


def test_a_spooled_group_of_several_batches_per_node_reads_back_block_for_block(open_tmp):
    spool = Spool(open_tmp / "spool", max_bytes=2**20, owners=2)
    t = datetime(2026, 11, 24, 12, 0, 0, 999999, tzinfo=timezone.utc)
    batches = [ok_batch(node, t + timedelta(seconds=15 * k)) for k in range(3) for node in (7, 9)]
    batches.insert(3, failed_batch(9, t + timedelta(seconds=20)))
    group = GroupBuilder("c1").build(batches, "c1:1:w1:1", None, encode=False)
    assert len(group.samples) == 6  # a block per ok batch
    spool.append(to_spool(group), owner=1)
    path, stored = spool.head(1)
    spool.remove(path)
    back = from_spool(json.loads(json.dumps(stored)))
    assert back == group
    assert list(sample_rows(back.samples)) == list(sample_rows(group.samples))
    assert back.sample_count == group.sample_count == GPUS * 6


def test_a_connection_that_refused_groups_goes_on_writing_the_next_ones(dsn):
    # A refused group's transaction is rolled back on the connection that
    # writes the next group. psycopg prepares a statement on its sixth use;
    # when that use falls in a refused group's aborted pipeline the server
    # never ran the PREPARE, and the connection must not go on using the name
    # ("prepared statement _pg3_1 does not exist" on every later group).
    # Connections with different offsets, so that the sixth use falls in a
    # refused group for some of them.
    node = new_nodes(dsn, 1)[0]
    t = datetime.now(timezone.utc)
    written = []
    for offset in range(4):
        builder = GroupBuilder(f"c{offset}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            groups = ["refused", *["good"] * offset, *["refused", "good"] * 6]
            for i, kind in enumerate(groups):
                at = t + timedelta(minutes=offset, seconds=i)
                if kind == "refused":  # a node that does not exist: its GPUs cannot be registered
                    group = builder.build([ok_batch(999_000 + i, at)], f"c{offset}:{i}", None, encode=False)
                    with pytest.raises(psycopg.errors.ForeignKeyViolation):
                        write_group(conn, group, collector_id=f"c{offset}", mode="plain")
                else:
                    group = builder.build([ok_batch(node, at)], f"c{offset}:{i}", None, encode=False)
                    assert write_group(conn, group, collector_id=f"c{offset}", mode="plain")
                    written.append((node, at))
    assert_written_exactly_once(dsn, written)


async def test_groups_the_database_aborts_in_a_deadlock_are_replayed_without_dropping_a_connection(
        dsn, open_tmp, caplog):
    # Rows under the hourly rollup's watermark make each group share-lock the
    # watermark row and then mark it: two writers doing so at once deadlock,
    # and the database aborts one. Here every row is under it (the watermark a
    # day ahead, as a collector whose clock runs behind the maintenance loop's sees).
    nodes = new_nodes(dsn, 6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE rollup_watermarks SET watermark = now() + interval '1 day'")
    caplog.set_level(logging.WARNING, logger="fleetscope.writer")
    async with split_writer(dsn, open_tmp) as writer:
        conns = [w.conn for w in writer.writers]
        load = Load(writer, nodes)
        await load.run(150, pause_s=0.02)
        await until(lambda: not len(writer.spool) and observation_count(dsn) == len(load.sent), timeout_s=60)
        assert [w.conn for w in writer.writers] == conns
    assert_written_exactly_once(dsn, load.sent)
    assert [r.getMessage() for r in caplog.records if "lost" in r.getMessage()] == []


async def test_a_batch_that_could_not_be_spooled_is_not_acknowledged_and_what_was_spooled_is_kept(open_tmp):
    writer = split_writer("host=127.0.0.1 port=1 dbname=never-connected connect_timeout=1", open_tmp,
                          heartbeat_s=60)
    t = datetime.now(timezone.utc)
    real_append, with_rows = writer.spool.append, []

    def append_until_the_disk_is_full(group, owner=0):
        if group["obs"]:  # (a heartbeat alone is spooled whatever happens)
            if with_rows:
                raise OSError(28, "No space left on device")
            with_rows.append(group["id"])
        real_append(group, owner)

    writer.spool.append = append_until_the_disk_is_full
    async with writer:  # the database is unreachable: every group goes to the spool
        first = writer.appender()
        for node in (2, 4, 6):
            first.append(ok_batch(node, t))
        await first.commit()
        await first.settled()  # spooled and fsync'd
        second = writer.appender()
        for node in (1, 3, 5):
            second.append(ok_batch(node, t))
        await second.commit()
        with pytest.raises(StorageBusy):
            await second.settled()
        spooled = [json.loads(p.read_bytes()) for p in writer.spool.directory.glob("*.group")]
        assert [{row[1] for row in g["obs"]} for g in spooled if g["obs"]] == [{2, 4, 6}]
        assert counted(writer, "lost") >= 1
