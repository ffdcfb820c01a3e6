"""The writer: every accepted batch reaches the database exactly once, through outages."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from collector.builder import GroupBuilder
from collector.group import Beat, split_by_node, write_group
from collector.writer import StorageBusy, Writer
from fleetscope.registry import create_operator, register_node
from fleetscope.snapshot import fleet_snapshot
from tests.collectordata import failed_batch, ok_batch


def new_node(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, f"op-{datetime.now().timestamp()}")
        return register_node(conn, operator_id=operator_id, name="n1").node_id


async def commit(writer: Writer, *batches) -> None:
    appender = writer.appender()
    for b in batches:
        appender.append(b)
    await appender.commit()


async def test_it_writes_observations_samples_identities_gpu_sets_and_a_heartbeat(dsn, open_tmp):
    node = new_node(dsn)
    t = datetime.now(timezone.utc).replace(microsecond=123456)
    async with Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain") as writer:
        await commit(writer, ok_batch(node, t), failed_batch(node, t + timedelta(seconds=15)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        obs = conn.execute("SELECT time, ok, source, error, collector_id FROM observations ORDER BY time").fetchall()
        assert obs == [(t, True, "push", None, "c1"),
                       (t + timedelta(seconds=15), False, "scrape", "timeout", "c1")]
        assert conn.execute("SELECT count(*), count(DISTINCT gpu_uuid), min(time) FROM gpu_samples").fetchone() \
            == (8, 8, t)
        model, driver = conn.execute("SELECT DISTINCT model, driver_version FROM gpus").fetchone()
        assert (model, driver) == ("NVIDIA A100-SXM4-80GB", "535.161.08")
        assert conn.execute("SELECT cardinality(healthy), since FROM node_gpu_sets").fetchall() == [(8, t)]
        assert conn.execute("SELECT count(*) FROM observing_periods WHERE collector_id = 'c1'").fetchone()[0] == 1
        # What was written is what the snapshot counts.
        snap = fleet_snapshot(conn, as_of=t + timedelta(seconds=1)).body
        assert snap["gpus"]["registered"] == snap["gpus"]["online"] == 8


async def test_an_unchanged_gpu_set_is_not_written_again(dsn, open_tmp):
    node = new_node(dsn)
    t = datetime.now(timezone.utc)
    async with Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain") as writer:
        for i in range(5):
            await commit(writer, ok_batch(node, t + timedelta(seconds=15 * i)))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM node_gpu_sets").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] == 40


def test_a_group_written_twice_is_skipped_the_second_time(dsn):
    node = new_node(dsn)
    group = GroupBuilder("c1").build([ok_batch(node)], "c1:1:w0:1", None, encode=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert write_group(conn, group, collector_id="c1", mode="plain")
        # As after a COMMIT whose acknowledgement was lost:
        assert not write_group(conn, group, collector_id="c1", mode="plain")
        assert conn.execute("SELECT count(*) FROM observations").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] == 8


async def test_a_full_queue_makes_commit_raise_storage_busy(dsn, open_tmp):
    writer = Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain", queue_batches=2,
                    commit_timeout_s=0.2)
    node = 1  # never written: the writer's task is not started
    await commit(writer, failed_batch(node, datetime.now(timezone.utc)), failed_batch(node, datetime.now(timezone.utc)))
    with pytest.raises(StorageBusy):
        await commit(writer, failed_batch(node, datetime.now(timezone.utc)))


async def test_a_database_killed_mid_load_loses_nothing_and_duplicates_nothing(own_server, open_tmp):
    server, dsn = own_server
    node = new_node(dsn)
    start = datetime.now(timezone.utc)
    sent = []
    async with Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain",
                      heartbeat_s=0.2, flush_interval_s=0.05) as writer:
        async def load(n: int) -> None:
            for _ in range(n):
                batch = ok_batch(node, start + timedelta(milliseconds=10 * len(sent)))
                sent.append(batch.received_at)
                await commit(writer, batch)
                await asyncio.sleep(0.01)

        await load(40)
        await asyncio.to_thread(server.stop, immediate=True)  # a crash, not a clean shutdown
        await load(60)
        assert not writer.database_up and len(writer.spool) > 0
        await asyncio.to_thread(server.ensure_running)
        await load(40)
        for _ in range(300):  # the spool drains once the database is back
            if not len(writer.spool) and writer.database_up:
                break
            await asyncio.sleep(0.1)
        assert len(writer.spool) == 0
    with psycopg.connect(dsn) as conn:
        times = [r[0] for r in conn.execute("SELECT time FROM observations WHERE node_id = %s ORDER BY time",
                                            (node,))]
        assert times == sorted(sent), "every accepted observation exactly once"
        assert conn.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] == 8 * len(sent)
        # Groups were written in the order they were built: spooled ones first.
        seqs = [int(r[0].rsplit(":", 1)[1]) for r in conn.execute(
            "SELECT batch_id FROM ingest_batches ORDER BY written_at, batch_id")]
        assert seqs == sorted(seqs)


def test_a_spooled_group_reads_back_exactly_as_it_was_built(open_tmp):
    from collector.spool import Spool, from_spool, to_spool

    t = datetime(2026, 11, 24, 12, 0, 0, 999999, tzinfo=timezone.utc)
    group = GroupBuilder("c1").build([ok_batch(7, t), failed_batch(7, t + timedelta(seconds=15))], "c1:1:w1:1",
                                     Beat(t - timedelta(minutes=1), t), encode=False)
    spool = Spool(open_tmp / "spool", max_bytes=2**20, owners=2)
    spool.append(to_spool(group), owner=1)
    assert spool.head(0) is None
    assert from_spool(spool.head(1)[1]) == group


async def test_a_refused_group_is_kept_aside_numbered_uniquely_and_its_nodes_are_offered_again(dsn, open_tmp):
    from collector.spool import Spool

    node = new_node(dsn)
    async with Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain") as writer:
        # Node 999999 does not exist: its GPUs cannot be registered, so the
        # database refuses the whole group (a constraint, not an outage).
        await commit(writer, ok_batch(999999))
        await asyncio.sleep(1)
        assert writer.spool.rejected == 1
        # Offered again: the next group built for it carries its identities and GPU set.
        again = writer.writer_of(999999).builder.build([ok_batch(999999)], "x", None, encode=False)
        assert again.identities and again.sets
        await commit(writer, ok_batch(node))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM observations WHERE node_id = %s", (node,)).fetchone()[0] == 1
    rejected = sorted((open_tmp / "spool" / "rejected").glob("*.group"))
    assert len(rejected) == 1 and (rejected[0].parent / (rejected[0].name + ".error")).read_text()
    # A new spool over the same directory continues past the rejected group's number.
    spool = Spool(open_tmp / "spool", max_bytes=2**20)
    spool.append({"id": "x"})
    assert spool.head()[0].name > rejected[0].name


def unknown_beside(node: int) -> int:
    """A node id that is not registered (the database refuses its rows) in ``node``'s bucket, so one group
    holds both."""
    return node + 2 * 3 * 5 * 7 * 10_000  # (the same bucket for 1, 2, 3, 5, 6, 7 ... writers)


async def test_a_refused_group_is_written_node_by_node_and_only_the_refused_node_is_kept_aside(dsn, open_tmp):
    node = new_node(dsn)
    unknown = unknown_beside(node)
    t = datetime.now(timezone.utc)
    async with Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain") as writer:
        # One group: a good node, then one the database refuses (no such node), then the good node again.
        await commit(writer, ok_batch(node, t), ok_batch(unknown, t), ok_batch(node, t + timedelta(seconds=15)))
        await asyncio.sleep(1)
        assert writer.spool.rejected == 1 and len(writer.spool) == 0
        assert writer._m_groups.labels("split")._value.get() == 1
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM observations WHERE node_id = %s", (node,)).fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM gpu_samples WHERE node_id = %s", (node,)).fetchone()[0] == 16
        assert conn.execute("SELECT count(*) FROM observations WHERE node_id = %s", (unknown,)).fetchone()[0] == 0
    rejected = sorted((open_tmp / "spool" / "rejected").glob("*.group"))
    assert len(rejected) == 1
    kept = json.loads(rejected[0].read_text())
    assert {row[1] for row in kept["obs"]} == {unknown} and len(kept["samples"]) == 8


async def test_a_refused_spooled_group_replayed_again_writes_its_good_nodes_once(dsn, open_tmp):
    from collector.spool import to_spool

    node = new_node(dsn)
    t = datetime.now(timezone.utc)
    group = GroupBuilder("c1").build([ok_batch(node, t), ok_batch(unknown_beside(node), t)], "c0:1:w0:1", None,
                                     encode=False)
    writer = Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain")
    writer.spool.append(to_spool(group), owner=node % len(writer.writers))
    # As if a salvage had written the good node's part and then lost the database.
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert write_group(conn, split_by_node(group)[0], collector_id="c1", mode="plain")
    async with writer:
        await commit(writer, ok_batch(node, t + timedelta(seconds=15)))
        await asyncio.sleep(1)
        assert len(writer.spool) == 0 and writer.spool.rejected == 1
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM observations WHERE node_id = %s", (node,)).fetchone()[0] == 2


async def test_a_value_that_cannot_be_formatted_is_refused_for_its_node_alone_and_the_writer_goes_on(dsn, open_tmp):
    import dataclasses

    good, bad = new_node(dsn), new_node(dsn)
    t = datetime.now(timezone.utc)
    broken = ok_batch(bad, t)
    samples = [s._replace(xid_last=10**20) for s in broken.payload.samples]  # no integer column holds it
    broken = dataclasses.replace(broken, payload=dataclasses.replace(broken.payload, samples=samples))
    async with Writer(dsn, spool_dir=open_tmp / "spool", collector_id="c1", mode="plain") as writer:
        await commit(writer, ok_batch(good, t), broken)
        await commit(writer, ok_batch(good, t + timedelta(seconds=15)))
        for _ in range(100):
            if writer.spool.rejected and not len(writer.spool):
                break
            await asyncio.sleep(0.05)
        assert writer.spool.rejected == 1 and len(writer.spool) == 0
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM observations WHERE node_id = %s", (good,)).fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM gpu_samples WHERE node_id = %s", (good,)).fetchone()[0] == 16
        assert conn.execute("SELECT count(*) FROM observations WHERE node_id = %s", (bad,)).fetchone()[0] == 0


def test_a_telemetry_only_batch_writes_its_samples_at_their_time_and_no_observation(dsn):
    node = new_node(dsn)
    at = datetime.now(timezone.utc) - timedelta(minutes=2)
    late = dataclasses.replace(ok_batch(node, at), telemetry_only=True)
    group = GroupBuilder("c1").build([late, ok_batch(node)], "c1:1:w0:9", None, encode=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert write_group(conn, group, collector_id="c1", mode="plain")
        assert conn.execute("SELECT count(*) FROM observations").fetchone()[0] == 1  # the fresh batch's alone
        assert conn.execute("SELECT count(*) FROM gpu_samples WHERE time = %s", (at,)).fetchone()[0] == 8
        assert conn.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] == 16
    [only] = split_by_node(GroupBuilder("c1").build([late], "c1:1:w0:10", None, encode=False))
    assert only.observations == [] and only.nodes == {node}  # a refused one is kept aside by its node too
