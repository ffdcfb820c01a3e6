"""Benchmark: the fleet snapshot on a large fleet (issue 2's target: <= 250 ms).

Loads N nodes x G GPUs with H hours of observations at the nodes' 15 s
interval into a fresh plain-PostgreSQL database (server-side, with
generate_series), refreshes the hourly rollup as the collector's maintenance
loop would, then times ``fleet_snapshot`` warm, several runs, and each of its
queries on its own with EXPLAIN ANALYZE to name the slowest and keep its plan.

Baseline in the same run: the bare "latest successful observation per node"
index probe that any correct snapshot must do (the floor), reported as a
ratio.

    python bench/bench_snapshot.py                      # 10,000 nodes, 8 GPUs each, 24 h
    python bench/bench_snapshot.py --nodes 1000 --hours 2   # a quick run
    python bench/bench_snapshot.py --reuse              # measure again on the loaded data

Without --dsn it uses the embedded server with its data in
$FLEETSCOPE_DATA_DIR (default: a directory under /var/tmp). Loading the full
size takes several minutes and about 8 GB of disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetscope import accounting, rollups  # noqa: E402
from fleetscope.config import PriceBounds  # noqa: E402
from fleetscope.migrate import init_database  # noqa: E402
from fleetscope.states import NODE_STATE_SQL  # noqa: E402
from fleetscope.snapshot import (  # noqa: E402
    COUNTS_SQL,
    FINDINGS_SQL,
    HIRED_VS_ONLINE_SQL,
    SNAPSHOT_WORK_MEM,
    fleet_snapshot,
)

DATABASE = "fleetscope_bench_snapshot"
AS_OF = datetime(2026, 11, 24, 12, 0, 7, tzinfo=timezone.utc)
MODELS = ["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090",
          "NVIDIA GeForce RTX 3090", "NVIDIA L40S"]

# The load, as SQL run on the server. 5% of nodes went offline an hour ago
# (failed scrapes since), 1 in 50 observations failed at random, 40% of nodes
# run a job now, and each node has ten finished jobs over the last 30 days.
# Proofs of GPU: hourly rounds over two days, the last 10 minutes ago, each a
# quarter of the nodes (960,000 verdicts, 480,000 in the last 24 h); 1 node in
# 10 never answers.
LOAD_SQL = """
INSERT INTO operators (operator_id, name, token_hash) VALUES (1, 'bench', '\\x00');
INSERT INTO nodes (node_id, operator_id, name, interval_s, grace_s, token_hash, registered_at)
SELECT n, 1, 'node-' || n, 15, 45, decode(md5(n::text), 'hex'), %(at)s - interval '8 days'
  FROM generate_series(1, %(nodes)s) n;
INSERT INTO gpus (node_id, gpu_uuid, gpu_index, model, memory_total_bytes, first_seen, last_seen)
SELECT n, 'GPU-' || md5(n || '-' || g), g, (%(models)s::text[])[1 + n %% 5], 85899345920,
       %(at)s - interval '8 days', %(at)s
  FROM generate_series(1, %(nodes)s) n, generate_series(0, %(gpus)s - 1) g;
INSERT INTO proof_rounds (round_id, opened_at, seed, protocol_version, scale, share)
SELECT r, %(at)s - make_interval(hours => 48 - r, mins => 10), repeat('00', 32), 1, 1, 0.25
  FROM generate_series(1, 48) r;
INSERT INTO proof_challenges (round_id, node_id, gpu_uuid, model, n, k, reference_tflops, budget_s, offered_at,
                              verdict, decided_at)
SELECT r, g.node_id, g.gpu_uuid, g.model, 67776, 67968, 312, 3.84, %(at)s - make_interval(hours => 48 - r, mins => 10),
       CASE WHEN g.node_id %% 10 = 0 THEN 'no_answer' ELSE 'passed' END,
       %(at)s - make_interval(hours => 48 - r, mins => 10, secs => -3)
  FROM generate_series(1, 48) r JOIN gpus g ON (g.node_id + r) %% 4 = 0;
INSERT INTO node_gpu_sets (node_id, since, healthy)
SELECT node_id, %(at)s - interval '8 days', array_agg(gpu_uuid ORDER BY gpu_index) FROM gpus GROUP BY node_id;
INSERT INTO observations (time, node_id, ok, source, slot, latency_ms)
SELECT t + make_interval(secs => (n %% 15)), n,
       NOT ((n %% 20 = 0 AND t > %(at)s - interval '1 hour') OR (hashint4(n + extract(epoch FROM t)::int) %% 50 = 0)),
       'scrape', floor(extract(epoch FROM t) / 15)::bigint, 4.0
  FROM generate_series(%(at)s - make_interval(hours => %(hours)s), %(at)s - interval '15 seconds',
                       interval '15 seconds') t,
       generate_series(1, %(nodes)s) n;
INSERT INTO jobs (job_id, node_id, gpu_count, price_per_gpu_hour, started_at, ended_at, status)
SELECT 'hist-' || n || '-' || k, n, 1 + (n + k) %% 8, 0.4 + (n %% 7) * 0.35,
       %(at)s - make_interval(days => 30) + make_interval(hours => k * 70 + n %% 24),
       %(at)s - make_interval(days => 30) + make_interval(hours => k * 70 + n %% 24 + 1 + (n + k) %% 20),
       CASE WHEN (n + k) %% 13 = 0 THEN 'failed' ELSE 'succeeded' END
  FROM generate_series(1, %(nodes)s) n, generate_series(0, 9) k;
INSERT INTO jobs (job_id, node_id, gpu_count, price_per_gpu_hour, started_at, status)
SELECT 'run-' || n, n, 1 + n %% 4, 1.2, %(at)s - make_interval(mins => 30 + n %% 600), 'running'
  FROM generate_series(1, %(nodes)s) n WHERE n %% 5 < 2;
INSERT INTO integrity_findings (kind, node_id, gpu_uuid, first_seen, last_seen)
SELECT 'virtualized', n, 'GPU-' || md5(n || '-0'), %(at)s - interval '2 hours', %(at)s
  FROM generate_series(7, %(nodes)s, 97) n;
INSERT INTO observing_periods VALUES ('bench', %(at)s - interval '8 days', %(at)s);
"""
OBSERVATION_INDEXES = ["observations_node_time", "observations_time"]  # 0006 dropped the partial ok index


def machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem_gb:.0f} GiB, {platform.machine()}, Python {platform.python_version()}"


def admin_dsn(args: argparse.Namespace) -> str:
    if args.dsn:
        return args.dsn
    from fleetscope.embedded import embedded_server

    os.environ.setdefault("FLEETSCOPE_DATA_DIR", "/var/tmp/fleetscope-bench")
    server = embedded_server()
    server.ensure_running()
    return server.dsn("postgres")


def dsn_for(admin: str, database: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(admin)
    params["dbname"] = database
    return make_conninfo(**params)


def load(admin: str, args: argparse.Namespace) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    dsn = dsn_for(admin, DATABASE)
    init_database(dsn, mode="plain")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        definitions = {r[0]: r[1] for r in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'observations'")}
        for name in OBSERVATION_INDEXES:  # bulk load, then build the same indexes
            conn.execute(f"DROP INDEX {name}")
        started = time.monotonic()
        params = {"at": AS_OF, "nodes": args.nodes, "gpus": args.gpus, "hours": args.hours, "models": MODELS}
        for statement in filter(str.strip, LOAD_SQL.split(";\n")):
            conn.execute(statement, params)
        loaded = time.monotonic()
        for name in OBSERVATION_INDEXES:
            conn.execute(definitions[name])
        indexed = time.monotonic()
        watermark, rows = rollups.refresh(conn, up_to=AS_OF)
        conn.execute("VACUUM ANALYZE")
        observations = conn.execute("SELECT count(*) FROM observations").fetchone()[0]
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        print(f"loaded {observations:,} observations in {loaded - started:.0f} s, indexed in "
              f"{indexed - loaded:.0f} s, rollup to {watermark:%H:%M} ({rows:,} rows); database {size}")
    return dsn


def timed(conn: psycopg.Connection, sql: str, params: dict) -> float:
    started = time.perf_counter()
    conn.execute(sql, params).fetchall()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="superuser DSN of the server to use (default: embedded)")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--reuse", action="store_true", help="measure the already loaded database")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    admin = admin_dsn(args)
    dsn = dsn_for(admin, DATABASE) if args.reuse else load(admin, args)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET work_mem = '{SNAPSHOT_WORK_MEM}'")  # as the snapshot's own transaction has it
        nodes = conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
        gpus = conn.execute("SELECT count(DISTINCT gpu_uuid) FROM gpus").fetchone()[0]
        observations = conn.execute("SELECT count(*) FROM observations").fetchone()[0]
        version = conn.execute("SHOW server_version").fetchone()[0]
        bounds = PriceBounds.from_env()
        fleet_snapshot(conn, as_of=AS_OF, price_bounds=bounds)  # warm the cache
        workers = [psycopg.connect(dsn, autocommit=True)]
        parallel_ms: dict[int, list[float]] = {1: []}
        snapshot_ms, floor_ms = [], []
        floor_sql = ("SELECT count(*) FROM nodes n, LATERAL (SELECT o.time FROM observations o WHERE "
                     "o.node_id = n.node_id AND o.ok AND o.time <= %(at)s ORDER BY o.time DESC LIMIT 1) lo")
        for _ in range(args.runs):
            started = time.perf_counter()
            snap = fleet_snapshot(conn, as_of=AS_OF, price_bounds=bounds)
            snapshot_ms.append((time.perf_counter() - started) * 1000)
            floor_ms.append(timed(conn, floor_sql, {"at": AS_OF}))
            for n in parallel_ms:
                started = time.perf_counter()
                parallel = fleet_snapshot(conn, as_of=AS_OF, price_bounds=bounds, workers=workers[:n])
                parallel_ms[n].append((time.perf_counter() - started) * 1000)
                assert parallel.canonical == snap.canonical
        at = {"at": AS_OF}
        check_we = rollups.floor_bucket(AS_OF)
        hired_sql = accounting.NODE_WINDOW_SQL.replace("%(start)s", "%(ws)s").replace("%(end)s", "%(we)s")
        parts = {
            "node states": (NODE_STATE_SQL, at),
            "node and GPU states, counts by model": (COUNTS_SQL, at),
            "accrual, last 24 h": (accounting.WINDOW_SQL, {"start": AS_OF - timedelta(hours=24), "end": AS_OF}),
            "accrual, total": (accounting.WINDOW_SQL, {"start": "-infinity", "end": AS_OF}),
            "findings": (FINDINGS_SQL, at),
            "hired vs online check": (
                HIRED_VS_ONLINE_SQL.format(hired=hired_sql, rollup=rollups.node_hourly_sql("plain")),
                {"at": AS_OF, "ws": check_we - timedelta(hours=24), "we": check_we}),
        }
        part_ms = {name: statistics.median(timed(conn, sql, p) for _ in range(5)) for name, (sql, p) in parts.items()}
        slowest = max(part_ms, key=part_ms.get)
        sql, params = parts[slowest]
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params))

    median, p95 = statistics.median(snapshot_ms), sorted(snapshot_ms)[int(0.95 * (len(snapshot_ms) - 1))]
    floor = statistics.median(floor_ms)
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": machine(), "postgres": version,
        "nodes": nodes, "gpus": gpus, "observations": observations, "runs": args.runs,
        "snapshot_ms_median": round(median, 1), "snapshot_ms_p95": round(p95, 1),
        "floor_ms_median": round(floor, 1), "ratio_to_floor": round(median / floor, 2),
        **{f"snapshot_ms_median_{n}_workers": round(statistics.median(v), 1) for n, v in parallel_ms.items()},
        **{f"snapshot_ms_p95_{n}_workers": round(sorted(v)[int(0.95 * (len(v) - 1))], 1)
           for n, v in parallel_ms.items()},
        "parts_ms": {k: round(v, 1) for k, v in part_ms.items()}, "slowest_part": slowest,
        "gpus_online": snap.body["gpus"]["online"], "nodes_online": snap.body["nodes"]["online"],
    }
    print(json.dumps(result, indent=2))
    print(f"\nplan of the slowest part ({slowest}):\n{plan}")
    if args.json:
        args.json.write_text(json.dumps({**result, "plan": plan}, indent=2))


if __name__ == "__main__":
    main()
