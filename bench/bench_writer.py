"""Benchmark: the collector's writer against a plain binary COPY (issue 4: ratio >= 0.8).

Both write the same GPU sample rows (8 GPUs per batch, from a recorded
dcgm-exporter payload) into ``gpu_samples`` of the same database, alternating,
several rounds:

- baseline: psycopg's binary ``COPY gpu_samples ... FROM STDIN`` with
  ``set_types``, the rows already built as tuples, one COPY per round;
- writer: batches committed through the writer's appender as the push receiver
  does, and the time until the writer has written them all (its groups also
  carry the observations, identities, GPU sets and heartbeat: its
  whole job, counted against it).

Rows/s are GPU sample rows per wall-clock second; the ratio is writer /
baseline per round, median reported. Two baselines, from the same COPYs: the
sample rows alone (``ratio``), and the sample rows plus the one observation
row per batch that the writer also writes (``ratio_same_rows``: a bare COPY of
exactly the rows the writer writes, its time the sum of the two COPYs).

    python bench/bench_writer.py                 # embedded server, plain mode
    python bench/bench_writer.py --dsn DSN       # another server (TimescaleDB: hypertable)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.ingest import Batch  # noqa: E402
from collector.parse import PayloadParser  # noqa: E402
from collector.group import OBSERVATION_COLUMNS, OBSERVATION_TYPES, SAMPLE_COLUMNS, SAMPLE_TYPES  # noqa: E402
from collector.writer import WRITE_CONNECTIONS, Writer  # noqa: E402
from fleetscope.migrate import database_mode, init_database  # noqa: E402
from fleetscope.registry import create_operator, register_node  # noqa: E402

DATABASE = "fleetscope_bench_writer"
# The push receiver commits one batch per request, and the event loop runs its
# other tasks (the writer among them) between requests; the benchmark lets
# this many commits through between two of its turns.
PUSHES_PER_TICK = 100
PAYLOAD = Path(__file__).resolve().parents[1] / "tests/fixtures/payloads/dcgm_exporter_12fields_a100x8.prom"


def admin_dsn(dsn: str | None) -> str:
    if dsn:
        return dsn
    from fleetscope.embedded import embedded_server

    os.environ.setdefault("FLEETSCOPE_DATA_DIR", "/var/tmp/fleetscope-bench")
    server = embedded_server()
    server.ensure_running()
    return server.dsn("postgres")


def fresh_database(admin: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    params = conninfo_to_dict(admin)
    params["dbname"] = DATABASE
    dsn = make_conninfo(**params)
    init_database(dsn)
    # Autovacuum would wake on the inserted rows at random points of the run
    # and slow whichever path is running then; both paths write to these
    # tables, so it is off for the benchmark's database only.
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("gpu_samples", "observations", "ingest_batches"):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    return dsn


def bench_fleet(admin: str | None, nodes: int) -> tuple[str, str, str, dict[int, Any]]:
    """A fresh benchmark database with ``nodes`` registered nodes: its DSN, mode, server version, and each
    node's parsed payload."""
    dsn = fresh_database(admin_dsn(admin))
    with psycopg.connect(dsn, autocommit=True) as conn:
        mode = database_mode(conn)
        version = conn.execute("SHOW server_version").fetchone()[0]
        operator_id, _ = create_operator(conn, "bench")
        node_ids = [register_node(conn, operator_id=operator_id, name=f"n{i}").node_id for i in range(nodes)]
    return dsn, mode, version, node_payloads(node_ids)


def node_payloads(node_ids: list[int]) -> dict[int, Any]:
    """Each node's parsed payload: the recorded one, with GPU UUIDs of its own (as in a real fleet)."""
    text = PAYLOAD.read_text()
    return {node: PayloadParser().parse(re.sub(r'UUID="GPU-[0-9a-f]{8}', f'UUID="GPU-{node:08x}', text).encode())
            for node in node_ids}


def make_batches(payloads: dict[int, Any], count: int, start: datetime) -> list[Batch]:
    node_ids = list(payloads)
    batches = []
    for i in range(count):
        t = start + timedelta(microseconds=1000 * i)
        node = node_ids[i % len(node_ids)]
        batches.append(Batch(node_id=node, received_at=t, slot=int(t.timestamp()) // 15, source="push", ok=True,
                             payload=payloads[node]))
    return batches


def checkpoint(dsn: str) -> None:
    """Start each path from a checkpoint: each then pays the same full-page writes.

    Without it, the checkpoints that ~100 MB of WAL per path trigger land on
    whichever path is running (the same path's rate varied 2x between rounds).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def baseline(dsn: str, batches: list[Batch]) -> tuple[float, float]:
    """Seconds for a bare COPY of the batches' GPU sample rows, and of their observation rows."""
    rows = [(b.received_at, b.node_id, *s) for b in batches for s in b.payload.samples]
    observations = [(b.received_at, b.node_id, b.ok, b.source, b.slot, b.latency_ms, b.error, "bench")
                    for b in batches]
    elapsed = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, columns, types, data in (("gpu_samples", SAMPLE_COLUMNS, SAMPLE_TYPES, rows),
                                            ("observations", OBSERVATION_COLUMNS, OBSERVATION_TYPES,
                                             observations)):
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(
                    f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in data:
                    copy.write_row(row)
            elapsed.append(time.perf_counter() - started)
    return elapsed[0], elapsed[1]


async def through_writer(dsn: str, batches: list[Batch], spool: Path, mode: str, connections: int) -> float:
    async with Writer(dsn, spool_dir=spool, collector_id="bench", mode=mode, connections=connections) as writer:
        # Warm the identity and GPU-set caches as a running collector has
        # them (its connections are open); the timing starts once that is written.
        nodes = len({b.node_id for b in batches})
        warm = writer.appender()
        for b in batches[:nodes]:
            warm.append(Batch(b.node_id, b.received_at - timedelta(days=1), b.slot, b.source, b.ok, None, None,
                              b.payload))
        await warm.commit()
        while writer._m_rows.labels("gpu_samples")._value.get() < 8 * nodes:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        written_before = writer._m_rows.labels("gpu_samples")._value.get()
        started = time.perf_counter()
        for i, b in enumerate(batches):
            appender = writer.appender()
            appender.append(b)
            await appender.commit()
            if i % PUSHES_PER_TICK == PUSHES_PER_TICK - 1:
                await asyncio.sleep(0)  # the event loop runs other tasks between requests
        target = written_before + 8 * len(batches)
        while writer._m_rows.labels("gpu_samples")._value.get() < target:
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
    return 8 * len(batches) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--batches", type=int, default=25_000, help="batches per round (x 8 rows)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=WRITE_CONNECTIONS,
                        help="the writer's connections (it is also timed with one, for comparison)")
    args = parser.parse_args()

    dsn, mode, version, payloads = bench_fleet(args.dsn, args.nodes)
    origin = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=1)
    results = []
    # Round 0 warms every path and is not counted; then they take turns at
    # going first, as the table (and its indexes) grows under all of them.
    for r in range(args.rounds + 1):
        # Fresh times, as a running collector writes (the writer writes a
        # group older than the rollup's settle time as one part).
        start = origin + timedelta(hours=r)
        batches = make_batches(payloads, args.batches, start)

        def writer_run(connections: int, minutes: int) -> float:
            later = make_batches(payloads, args.batches, start + timedelta(minutes=minutes))
            with tempfile.TemporaryDirectory() as spool:
                return asyncio.run(through_writer(dsn, later, Path(spool), mode, connections))

        paths = [("copy", lambda: baseline(dsn, batches)),
                 ("writer", lambda: writer_run(args.connections, 20)),
                 ("writer_1", lambda: writer_run(1, 40))]
        paths = paths[r % 3:] + paths[:r % 3]
        got = {}
        for name, run in paths:
            checkpoint(dsn)
            got[name] = run()
        if r == 0:
            continue
        rows = 8 * args.batches
        t_samples, t_obs = got["copy"]
        base, both = rows / t_samples, rows / (t_samples + t_obs)
        results.append((base, both, got["writer"], got["writer_1"]))
        print(f"round {r}: COPY of the sample rows {base:,.0f} rows/s, of the sample and observation rows "
              f"{both:,.0f} sample rows/s; writer {got['writer']:,.0f} rows/s ({args.connections} connections), "
              f"{got['writer_1']:,.0f} (1); ratios {got['writer'] / base:.2f}, {got['writer'] / both:.2f}; "
              f"with one connection {got['writer_1'] / base:.2f}")
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    median = statistics.median
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {mem_gb:.0f} GiB, Python {platform.python_version()}",
        "postgres": version, "mode": mode, "rows_per_round": 8 * args.batches, "rounds": args.rounds,
        "writer_connections": args.connections, "switch_interval_s": sys.getswitchinterval(),
        "baseline_rows_per_s": round(median(b for b, _, _, _ in results)),
        "baseline_with_observations_rows_per_s": round(median(b for _, b, _, _ in results)),
        "writer_rows_per_s": round(median(o for _, _, o, _ in results)),
        "writer_one_connection_rows_per_s": round(median(o for _, _, _, o in results)),
        "ratio_median": round(median(o / b for b, _, o, _ in results), 2),
        "ratio_same_rows_median": round(median(o / b for _, b, o, _ in results), 2),
        "ratio_one_connection_median": round(median(o / b for b, _, _, o in results), 2),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
