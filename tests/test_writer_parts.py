"""The writer's parts: a large group split by node over two connections still writes every row exactly once."""

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

from collector.writer import Writer, from_spool, sample_count, sample_rows, to_spool
from fleetscope.registry import create_operator, register_node
from tests.collectordata import failed_batch, ok_batch

# Small enough that a round of six nodes' batches is split in two parts.
PARALLEL_MIN_BATCHES = 4
GPUS = 8  # GPU samples per ok batch of the recorded payload


def new_nodes(dsn: str, count: int) -> list[int]:
    """``count`` registered nodes of one new operator; consecutive ids, so both parities (both parts)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, f"op-{uuid.uuid4().hex[:8]}")
        return [register_node(conn, operator_id=operator_id, name=f"n{i}").node_id for i in range(count)]


def split_writer(dsn: str, open_tmp, **options) -> Writer:
    options = {"heartbeat_s": 0.2, "flush_interval_s": 0.05, **options}
    return Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain", connections=2,
                  parallel_min_batches=PARALLEL_MIN_BATCHES, **options)


async def commit(writer: Writer, batches) -> None:
    appender = writer.appender()
    for b in batches:
        appender.append(b)
    await appender.commit()


class Load:
    """Rounds of one ok batch per node, each round one commit (one split group), and what was sent."""

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

    async def until_a_new_spare(self, old_pid: int) -> None:
        """Send rounds (split groups) until the writer has a spare connection other than ``old_pid``."""
        for _ in range(100):
            spares = self.writer._spares
            if spares and spares[0].info.backend_pid != old_pid:
                return
            await self.round()
            await asyncio.sleep(0.1)
        raise AssertionError("no new spare connection after 100 split groups")


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


def part_ids(dsn: str) -> dict[str, int]:
    """ingest_batches' ids of written parts (``.../p<i>``) and their row counts."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT batch_id, rows FROM ingest_batches WHERE batch_id LIKE '%/p_'"))


def lane_order(dsn: str) -> dict[str, list[tuple[datetime, int]]]:
    """Each lane's parts (``/p0``, ``/p1``) as (transaction start, group sequence number), in the order written."""
    lanes: dict[str, list[tuple[datetime, int]]] = {}
    with psycopg.connect(dsn) as conn:
        for batch_id, at in conn.execute("SELECT batch_id, written_at FROM ingest_batches"
                                         " WHERE batch_id ~ '/p[01]$' ORDER BY written_at, batch_id"):
            group, lane = batch_id.rsplit("/", 1)
            lanes.setdefault(lane, []).append((at, int(group.rsplit(":", 1)[1])))
    return lanes


def assert_each_lane_in_order(dsn: str) -> None:
    """A node's rows are on one connection in order: each lane wrote its groups in the order they were built."""
    for lane, parts in lane_order(dsn).items():
        seqs = [seq for _, seq in parts]
        assert seqs == sorted(seqs), f"lane {lane} wrote groups out of order: {seqs}"


def spooled_observations(writer: Writer) -> int:
    return sum(len(json.loads(path.read_bytes())["obs"]) for path in writer.spool.directory.glob("*.group"))


def terminate(dsn: str, pid: int) -> None:
    """End one backend from another connection, as an administrator or a pooler's timeout would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def counted(writer: Writer, result: str) -> float:
    return writer._m_groups.labels(result)._value.get()


async def test_a_large_group_is_written_as_two_parts_by_node_with_one_heartbeat(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    t = datetime.now(timezone.utc)
    batches = [ok_batch(node, t + timedelta(seconds=15 * k)) for k in range(2) for node in nodes]
    # (Built by a writer of their own: building updates a writer's caches of identities and sets.)
    parts = split_writer(dsn, open_tmp / "inspect")._build_parts(batches)
    assert [p["id"].rsplit("/", 1)[1] for p in parts] == ["p0", "p1"]
    assert [{row[1] for row in p["obs"]} for p in parts] == [{n for n in nodes if n % 2 == 0},
                                                             {n for n in nodes if n % 2 == 1}]
    assert parts[0]["beat"] is not None and parts[1]["beat"] is None
    async with split_writer(dsn, open_tmp) as writer:
        await commit(writer, batches)  # one commit: one group of 12 batches
        await until(lambda: observation_count(dsn) == len(batches), what="the group written")
        assert len(writer._spares) == 1 and writer.database_up
    assert_written_exactly_once(dsn, [(b.node_id, b.received_at) for b in batches])
    ids = part_ids(dsn)
    group = next(iter(ids)).rsplit("/", 1)[0]
    per_part = 2 * 3 * (1 + GPUS)  # two batches of three nodes, each an observation and its samples
    assert ids == {f"{group}/p0": per_part, f"{group}/p1": per_part}
    with psycopg.connect(dsn) as conn:
        periods = conn.execute("SELECT started_at, last_beat_at FROM observing_periods"
                               " WHERE collector_id = 'c1'").fetchall()
    assert len(periods) == 1 and periods[0][0] <= periods[0][1]


async def test_a_split_group_with_no_node_in_the_first_part_still_writes_the_heartbeat(dsn, open_tmp):
    odd = [n for n in new_nodes(dsn, 10) if n % 2 == 1]
    t = datetime.now(timezone.utc)
    batches = [ok_batch(node, t) for node in odd]
    writer = split_writer(dsn, open_tmp)
    parts = writer._build_parts(batches)
    assert [(p["id"].rsplit("/", 1)[1], len(p["obs"]), p["beat"] is not None) for p in parts] \
        == [("p0", 0, True), ("p1", 5, False)]
    assert await writer._ensure_connection()
    await writer._submit(parts)
    await writer.close()
    assert_written_exactly_once(dsn, [(b.node_id, b.received_at) for b in batches])
    assert sorted(part_ids(dsn).values()) == [0, 5 * (1 + GPUS)]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT last_beat_at FROM observing_periods WHERE collector_id = 'c1'").fetchall() \
            == [(parts[0]["beat"][1],)]


async def test_a_database_killed_while_groups_are_split_loses_nothing_and_duplicates_nothing(own_server, open_tmp):
    server, dsn = own_server
    nodes = new_nodes(dsn, 6)
    async with split_writer(dsn, open_tmp) as writer:
        load = Load(writer, nodes)
        await load.run(20)
        await until(lambda: writer._spares, what="a spare connection")
        await asyncio.to_thread(server.stop, immediate=True)  # a crash, not a clean shutdown
        await load.run(30)
        assert not writer.database_up and len(writer.spool) > 0
        await asyncio.to_thread(server.ensure_running)
        await load.run(20)
        await until(lambda: not len(writer.spool) and writer.database_up
                    and observation_count(dsn) == len(load.sent), what="the spool drained")
        assert counted(writer, "replayed") > 0
    assert_written_exactly_once(dsn, load.sent)
    ids = part_ids(dsn)
    assert sum(i.endswith("/p1") for i in ids) == sum(i.endswith("/p0") for i in ids) > 0
    assert_each_lane_in_order(dsn)


async def test_a_spare_connection_terminated_between_groups_loses_nothing_and_is_reopened(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    async with split_writer(dsn, open_tmp) as writer:
        load = Load(writer, nodes)
        await load.round()
        await until(lambda: observation_count(dsn) == len(load.sent), what="the first group")
        main, (spare,) = writer._conn, writer._spares
        old_spare_pid = spare.info.backend_pid
        await asyncio.to_thread(terminate, dsn, old_spare_pid)
        await load.round()  # its second part fails on the dead spare: spooled, replayed on the main connection
        await until(lambda: not len(writer.spool) and observation_count(dsn) == len(load.sent),
                    what="the part lost with the spare replayed")
        assert spare not in writer._spares and counted(writer, "spooled") >= 1
        await load.until_a_new_spare(old_spare_pid)  # after the backoff
        await until(lambda: not len(writer.spool) and observation_count(dsn) == len(load.sent),
                    what="the last groups")
        assert writer._conn is main and writer.database_up, "losing a spare leaves the main connection up"
    assert_written_exactly_once(dsn, load.sent)
    ids = part_ids(dsn)
    assert sum(i.endswith("/p1") for i in ids) == sum(i.endswith("/p0") for i in ids) > 0


async def test_a_spare_connection_terminated_during_load_loses_nothing_and_the_main_one_stays_up(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    async with split_writer(dsn, open_tmp) as writer:
        load = Load(writer, nodes)
        await load.run(5)
        await until(lambda: writer._spares, what="a spare connection")
        main, old_spare_pid = writer._conn, writer._spares[0].info.backend_pid
        loading = asyncio.create_task(load.run(60, pause_s=0.02))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(terminate, dsn, old_spare_pid)
        await loading
        await until(lambda: not len(writer.spool) and observation_count(dsn) == len(load.sent),
                    what="everything written")
        assert counted(writer, "spooled") >= 1
        await load.until_a_new_spare(old_spare_pid)
        await until(lambda: not len(writer.spool) and observation_count(dsn) == len(load.sent),
                    what="the last groups")
        assert writer._conn is main and writer.database_up, "losing a spare leaves the main connection up"
    assert_written_exactly_once(dsn, load.sent)


@pytest.mark.parametrize("refused", [999999, 999998], ids=["in-the-second-part", "in-the-first-part"])
async def test_a_node_refused_in_a_split_group_is_kept_aside_and_the_other_nodes_are_written_once(
        dsn, open_tmp, refused):
    nodes = new_nodes(dsn, 6)
    t = datetime.now(timezone.utc)
    # Node `refused` does not exist: its GPUs cannot be registered, so its part is refused whole.
    batches = [ok_batch(node, t + timedelta(seconds=15 * k)) for k in range(2) for node in [*nodes, refused]]
    async with split_writer(dsn, open_tmp) as writer:
        await commit(writer, batches)
        good = [b for b in batches if b.node_id != refused]
        await until(lambda: observation_count(dsn) == len(good) and writer.spool.rejected == 1,
                    what="the refused part salvaged")
        assert len(writer.spool) == 0
        assert counted(writer, "split") == 1 and counted(writer, "rejected") == 1
    assert_written_exactly_once(dsn, [(b.node_id, b.received_at) for b in good])
    refused_part = f"p{refused % 2}"
    ids = part_ids(dsn)
    assert [i.rsplit("/", 1)[1] for i in ids] == [f"p{1 - refused % 2}"], "the refused part was rolled back"
    group = next(iter(ids)).rsplit("/", 1)[0]
    with psycopg.connect(dsn) as conn:
        salvaged = dict(conn.execute("SELECT batch_id, rows FROM ingest_batches WHERE batch_id LIKE %s",
                                     (f"{group}/{refused_part}/%",)))
        periods = conn.execute("SELECT count(*) FROM observing_periods WHERE collector_id = 'c1'").fetchone()[0]
    same_part = [n for n in nodes if n % 2 == refused % 2]
    assert salvaged == {f"{group}/{refused_part}/{n}": 2 * (1 + GPUS) for n in same_part}
    assert periods == 1
    (kept,) = (open_tmp / "spool" / "rejected").glob("*.group")
    kept = json.loads(kept.read_text())
    assert {row[1] for row in kept["obs"]} == {refused} and len(kept["obs"]) == 2
    assert len(kept["samples"]) == 2 * GPUS


async def test_a_part_refused_behind_a_part_lost_with_its_connection_is_salvaged_on_replay(dsn, open_tmp):
    nodes = new_nodes(dsn, 6)
    async with split_writer(dsn, open_tmp) as writer:
        load = Load(writer, nodes)
        await load.round()
        await until(lambda: observation_count(dsn) == len(load.sent) and writer._spares,
                    what="the first group")
        # The main connection dies (its part is spooled) while the spare's part is refused.
        await asyncio.to_thread(terminate, dsn, writer._conn.info.backend_pid)
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
        assert not writer.database_up and writer._formatter is None
        load = Load(writer, nodes)
        await load.run(10)
        await until(lambda: spooled_observations(writer) == len(load.sent), what="the groups spooled")
        assert writer._formatter is None
        await asyncio.to_thread(server.ensure_running)
        await load.run(10)
        await until(lambda: not len(writer.spool) and writer.database_up
                    and observation_count(dsn) == len(load.sent), what="the spool drained")
        assert writer._formatter is not None
        await load.run(5)  # groups formatted as they are built, from now on
        await until(lambda: observation_count(dsn) == len(load.sent), what="the last groups")
    assert_written_exactly_once(dsn, load.sent)
    ids = part_ids(dsn)
    assert sum(i.endswith("/p1") for i in ids) == sum(i.endswith("/p0") for i in ids) > 0


async def test_parts_built_before_any_connection_write_the_same_rows_as_parts_formatted_when_built(dsn, open_tmp):
    nodes = new_nodes(dsn, 12)
    t = datetime.now(timezone.utc)
    writer = split_writer(dsn, open_tmp)
    unformatted = writer._build_parts([ok_batch(node, t) for node in nodes[:6]])
    assert [(p["obs_copy"], p["samples_copy"]) for p in unformatted] == [(None, None)] * 2
    assert await writer._ensure_connection()
    formatted = writer._build_parts([ok_batch(node, t) for node in nodes[6:]])
    assert all(p["obs_copy"] and p["samples_copy"] for p in formatted)
    await writer._submit(unformatted)
    await writer._submit(formatted)
    await writer.close()
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


def test_a_spooled_part_of_several_batches_per_node_reads_back_block_for_block(open_tmp):
    writer = split_writer("dbname=never-connected", open_tmp)  # no formatter: no COPY data on either side
    t = datetime(2026, 11, 24, 12, 0, 0, 999999, tzinfo=timezone.utc)
    batches = [ok_batch(node, t + timedelta(seconds=15 * k)) for k in range(3) for node in (7, 8, 9)]
    batches.insert(4, failed_batch(8, t + timedelta(seconds=20)))
    parts = writer._build_parts(batches, parts=2)
    assert [len(p["samples"]) for p in parts] == [3, 6]  # a block per ok batch
    for part in parts:
        writer.spool.append(to_spool(part))
        path, stored = writer.spool.head()
        writer.spool.remove(path)
        back = from_spool(json.loads(json.dumps(stored)))
        assert back == part
        assert list(sample_rows(back["samples"])) == list(sample_rows(part["samples"]))
        assert sample_count(back) == sample_count(part) == GPUS * len(part["samples"])


async def test_a_connection_that_refused_groups_goes_on_writing_the_next_ones(dsn, open_tmp):
    # A refused group's transaction is rolled back on the connection that
    # writes the next group (a salvaged part's nodes, the next part). psycopg
    # prepares a statement on its sixth use; when that use falls in a refused
    # group's aborted pipeline the server never ran the PREPARE, and the
    # connection must not go on using the name ("prepared statement _pg3_1
    # does not exist" on every later group). Writers with different offsets,
    # so that the sixth use falls in a refused group for some of them.
    node = new_nodes(dsn, 1)[0]
    t = datetime.now(timezone.utc)
    written = []
    for offset in range(4):
        writer = Writer(dsn, spool_dir=open_tmp / f"spool{offset}", collector_id=f"c{offset}", mode="plain",
                        connections=1)
        assert await writer._ensure_connection()
        groups = ["refused", *["good"] * offset, *["refused", "good"] * 6]
        for i, kind in enumerate(groups):
            at = t + timedelta(minutes=offset, seconds=i)
            if kind == "refused":  # a node that does not exist: its GPUs cannot be registered
                with pytest.raises(psycopg.errors.ForeignKeyViolation):
                    await writer._write(writer._build_group([ok_batch(999_000 + i, at)]))
            else:
                await writer._write(writer._build_group([ok_batch(node, at)]))
                written.append((node, at))
        await writer.close()
    assert_written_exactly_once(dsn, written)


async def test_parts_the_database_aborts_in_a_deadlock_are_replayed_without_dropping_a_connection(dsn, open_tmp, caplog):
    # Rows under the hourly rollup's watermark make each part share-lock the
    # watermark row and then mark it: two parts doing so at once deadlock, and
    # the database aborts one. Here every row is under it (the watermark a day
    # ahead, as a collector whose clock runs behind the maintenance loop's sees).
    nodes = new_nodes(dsn, 6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE rollup_watermarks SET watermark = now() + interval '1 day'")
    caplog.set_level(logging.WARNING, logger="fleetscope.writer")
    async with split_writer(dsn, open_tmp) as writer:
        main = writer._conn
        load = Load(writer, nodes)
        await load.run(150, pause_s=0.02)
        await until(lambda: not len(writer.spool) and observation_count(dsn) == len(load.sent), timeout_s=60)
        assert writer._conn is main
    assert_written_exactly_once(dsn, load.sent)
    assert [r.getMessage() for r in caplog.records if "lost" in r.getMessage()] == []


async def test_a_part_spooled_before_the_spool_failed_is_kept_and_only_the_other_is_counted_lost(open_tmp):
    writer = split_writer("host=127.0.0.1 port=1 dbname=never-connected connect_timeout=1", open_tmp)
    t = datetime.now(timezone.utc)
    parts = writer._build_parts([ok_batch(node, t) for node in range(1, 7)], parts=2)
    real_append, calls = writer.spool.append, []

    def append_until_the_disk_is_full(group):
        calls.append(group["id"])
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real_append(group)

    writer.spool.append = append_until_the_disk_is_full
    await writer._submit(parts)  # the database is unreachable: both parts go to the spool
    assert calls == [parts[0]["id"], parts[1]["id"]]
    assert len(writer.spool) == 1 and writer.spool.head()[1]["id"] == parts[0]["id"]
    assert counted(writer, "spooled") == 1 and counted(writer, "lost") == 1
