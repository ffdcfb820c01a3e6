"""Benchmark: all integrity checks, and ``fleetscope verify`` on a day's bundle, at 10,000 nodes / 80,000 GPUs.

Issue 6's targets: all checks together <= 10 s per run; verify <= 60 s.

Loads the fleet of bench/bench_snapshot.py (the same LOAD_SQL: N nodes x G
GPUs, H hours of observations at 15 s, jobs, findings) into a database of its
own, then adds what the checks read:

- identities as NVML reports them (memory, SMs, max clock per model), with
  1 node in 200 a spec mismatch (an RTX 4090 named an H100) and 1 in 101
  with a vGPU;
- 1 node in 500 reporting another node's GPU (a duplicated UUID) and 1 in
  300 whose GPU set changed two hours ago;
- 10 minutes of GPU telemetry (40 samples per GPU, 3.2 M rows), 1 node in
  1,000 with cloned telemetry;
- a week of fleet counts every 5 minutes (growing by ~300 GPUs a day, online
  following the day).

Then it times ``run_checks`` (the first run, which opens findings and marks
GPUs checked, and then steady-state runs: median), publishes the snapshot
with its bundle (timed), and times ``fleetscope verify`` on that bundle
(median of several runs, each in a fresh process as a user would run it).

    python bench/bench_integrity.py                    # 10,000 nodes, 8 GPUs, 24 h
    python bench/bench_integrity.py --nodes 500 --hours 2   # a quick run
    python bench/bench_integrity.py --reuse            # measure again on the loaded data
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_snapshot import AS_OF, LOAD_SQL, MODELS, OBSERVATION_INDEXES, admin_dsn, dsn_for, machine  # noqa: E402
from fleetscope import rollups, slot_runs  # noqa: E402
from fleetscope.integrity import IntegritySettings, record_fleet_counts, run_checks  # noqa: E402
from fleetscope.migrate import init_database  # noqa: E402
from fleetscope.chain import publish  # noqa: E402

DATABASE = "fleetscope_bench_integrity"

# Identities per model as NVML reports them (exporters/sim.py MODELS), then the planted cases.
EXTRA_SQL = """
UPDATE gpus g SET memory_total_bytes = m.mib::bigint * 1048576, sm_count = m.sms, max_sm_clock_mhz = m.clock,
                  virtualization_mode = 'none'
  FROM (VALUES ('NVIDIA A100-SXM4-80GB', 81920, 108, 1410), ('NVIDIA H100 80GB HBM3', 81559, 132, 1980),
               ('NVIDIA GeForce RTX 4090', 24564, 128, 3120), ('NVIDIA GeForce RTX 3090', 24576, 82, 2100),
               ('NVIDIA L40S', 46068, 142, 2520)) AS m(model, mib, sms, clock)
 WHERE g.model = m.model;
UPDATE gpus SET model = 'NVIDIA H100 80GB HBM3', memory_total_bytes = 24564::bigint * 1048576, sm_count = 128,
                max_sm_clock_mhz = 3120
 WHERE node_id %% 200 = 3;
UPDATE gpus SET virtualization_mode = 'vgpu' WHERE node_id %% 101 = 5 AND gpu_index = 0;
INSERT INTO gpus (node_id, gpu_uuid, gpu_index, model, memory_total_bytes, sm_count, max_sm_clock_mhz,
                  virtualization_mode, first_seen, last_seen)
SELECT n, 'GPU-' || md5((n + 1) || '-0'), 99, 'NVIDIA A100-SXM4-80GB', 81920::bigint * 1048576, 108, 1410, 'none',
       %(at)s - interval '1 day', %(at)s
  FROM generate_series(11, %(nodes)s - 1, 500) n;
INSERT INTO gpus (node_id, gpu_uuid, gpu_index, model, memory_total_bytes, sm_count, max_sm_clock_mhz,
                  virtualization_mode, first_seen, last_seen)
SELECT n, 'GPU-swapped-' || n, 98, 'NVIDIA A100-SXM4-80GB', 81920::bigint * 1048576, 108, 1410, 'none',
       %(at)s - interval '2 hours', %(at)s
  FROM generate_series(13, %(nodes)s, 300) n;
INSERT INTO node_gpu_sets (node_id, since, healthy)
SELECT s.node_id, %(at)s - interval '2 hours', s.healthy[2:] || ('GPU-swapped-' || s.node_id)
  FROM node_gpu_sets s WHERE s.node_id %% 300 = 13;
INSERT INTO gpu_samples (time, node_id, gpu_uuid, gpu_index, gpu_util, mem_copy_util, fb_used_mib, fb_free_mib,
                         power_w, energy_mj, temp_c, sm_clock_mhz, mem_clock_mhz)
SELECT t, g.node_id, g.gpu_uuid, g.gpu_index, h %% 101, h %% 53, 1000 + h %% 7000, 70000 - h %% 7000,
       60 + (h %% 3400) / 10.0, 1e9 + extract(epoch FROM t) * 300 + (key.k %% 1000), 30 + h %% 50, 210 + h %% 1200, 1593
  FROM gpus g, generate_series(%(at)s - interval '10 minutes' + interval '15 seconds', %(at)s, interval '15 seconds') t,
       LATERAL (SELECT CASE WHEN g.node_id %% 1000 = 17 THEN g.node_id ELSE hashtext(g.gpu_uuid) END AS k) key,
       LATERAL (SELECT abs(hashint8(key.k * 100003 + extract(epoch FROM t)::bigint)) AS h) v
 WHERE g.gpu_index < 90;
INSERT INTO fleet_gpu_counts (at, registered, online)
SELECT t, c.n - (extract(epoch FROM %(at)s - t) / 300)::int / 3,
       (c.n * (0.95 + 0.02 * sin(extract(epoch FROM t) / 86400 * 2 * pi())))::int
  FROM (SELECT count(DISTINCT gpu_uuid) AS n FROM gpus) c, generate_series(%(at)s - interval '7 days', %(at)s - interval '5 minutes', interval '5 minutes') t
"""


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
        for name in OBSERVATION_INDEXES:
            conn.execute(f"DROP INDEX {name}")
        started = time.monotonic()
        params = {"at": AS_OF, "nodes": args.nodes, "gpus": args.gpus, "hours": args.hours, "models": MODELS}
        for statement in filter(str.strip, LOAD_SQL.split(";\n")):
            conn.execute(statement, params)
        for statement in filter(str.strip, EXTRA_SQL.split(";\n")):
            conn.execute(statement, params)
        for name in OBSERVATION_INDEXES:
            conn.execute(definitions[name])
        rollups.refresh(conn, up_to=AS_OF)
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        print(f"loaded in {time.monotonic() - started:.0f} s; database {size}", flush=True)
    return dsn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="superuser DSN of the server to use (default: embedded)")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--verify-runs", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="measure the already loaded database")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    admin = admin_dsn(args)
    dsn = dsn_for(admin, DATABASE) if args.reuse else load(admin, args)
    at = AS_OF
    settings = IntegritySettings()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE gpus SET checked_at = NULL")
        conn.execute("DELETE FROM integrity_findings WHERE first_seen >= %s - interval '1 hour'", (at,))
        conn.execute("DELETE FROM published_snapshots")
        nodes = conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
        gpus = conn.execute("SELECT count(DISTINCT gpu_uuid) FROM gpus").fetchone()[0]
        samples = conn.execute("SELECT count(*) FROM gpu_samples").fetchone()[0]
        version = conn.execute("SHOW server_version").fetchone()[0]

        started = time.perf_counter()
        record_fleet_counts(conn, at=at)
        counts_s = time.perf_counter() - started
        started = time.perf_counter()
        first = run_checks(conn, at=at, settings=settings)
        first_s = time.perf_counter() - started
        steady = []
        per_check: dict[str, list[float]] = {}
        for i in range(args.runs):
            started = time.perf_counter()
            again = run_checks(conn, at=at + timedelta(seconds=i + 1), settings=settings)
            steady.append(time.perf_counter() - started)
            assert all(r.opened == 0 for r in again.values()), again
        # Each check on its own, for the slowest part.
        from fleetscope.integrity import (cloned_telemetry, duplicate_uuid, fleet_jump, identity_change,
                                          spec_mismatch, virtualized)
        for name, run in (("duplicate_uuid", lambda: duplicate_uuid.find(conn, at=at)),
                          ("virtualized", lambda: virtualized.find(conn, at=at)),
                          ("spec_mismatch", lambda: spec_mismatch.find(conn, at=at)),
                          ("cloned_telemetry", lambda: cloned_telemetry.find(conn, at=at)),
                          ("identity_change", lambda: identity_change.find(conn, at=at)),
                          ("fleet_jump", lambda: fleet_jump.find(conn, at=at))):
            for _ in range(3):
                started = time.perf_counter()
                run()
                per_check.setdefault(name, []).append(time.perf_counter() - started)
        findings = dict(conn.execute("SELECT kind, count(*) FROM integrity_findings WHERE resolved_at IS NULL"
                                     " GROUP BY kind ORDER BY kind").fetchall())

        # The slot runs a bundle carries are kept incrementally: built once
        # (all history: a one-time cost), then extended by an hour per
        # publication, which is what publish_s includes.
        conn.execute("DELETE FROM node_slot_runs")
        conn.execute("DELETE FROM node_slot_runs_watermark")
        started = time.perf_counter()
        slot_runs.refresh(conn, up_to=at - timedelta(hours=1))
        runs_initial_s = time.perf_counter() - started
        bundle_dir = Path(tempfile.mkdtemp(prefix="fleetscope-bench-bundles-"))
        started = time.perf_counter()
        published = publish(conn, as_of=at, bundle_dir=bundle_dir)
        publish_s = time.perf_counter() - started
    verify_s = []
    for _ in range(args.verify_runs):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fleetscope.cli", "verify", str(published.bundle_path)],
                              capture_output=True, text=True)
        verify_s.append(time.perf_counter() - started)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
        "postgres": version, "nodes": nodes, "gpus": gpus, "gpu_samples": samples, "hours": args.hours,
        "record_fleet_counts_s": round(counts_s, 2),
        "checks_first_run_s": round(first_s, 2), "checks_first_run_opened": {k: r.opened for k, r in first.items()},
        "checks_steady_s_median": round(statistics.median(steady), 2), "checks_steady_s_max": round(max(steady), 2),
        "runs": args.runs,
        "per_check_s_median": {k: round(statistics.median(v), 3) for k, v in per_check.items()},
        "open_findings": findings,
        "slot_runs_initial_build_s": round(runs_initial_s, 1),
        "publish_s": round(publish_s, 1), "bundle_bytes": published.bundle_path.stat().st_size,
        "verify_s_median": round(statistics.median(verify_s), 1), "verify_s_all": [round(v, 1) for v in verify_s],
        "last_verify_output_tail": proc.stdout.splitlines()[-3:],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
