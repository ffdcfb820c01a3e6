"""One alert evaluation round over a fleet of N nodes reporting every 15 s (issue 7).

    python bench/bench_alerts.py --dsn postgresql://postgres@127.0.0.1:55433/postgres --nodes 10000

Creates a scratch database on the server, registers N nodes, writes two
minutes of ok observations, then times rounds of collector/alerts.py's
evaluator: the first (every node probed once), then steady rounds of 10 s of
new observations each, then a round where 1% of the nodes went down.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.alerts import Evaluator
from fleetscope import tokens
from fleetscope.migrate import init_database


def _copy_observations(conn: psycopg.Connection, node_ids: list[int], times: list[datetime],
                       *, skip: set[int] = frozenset()) -> None:
    with conn.cursor().copy("COPY observations (time, node_id, ok, source, slot) FROM STDIN") as copy:
        for t in times:
            for node_id in node_ids:
                if node_id not in skip:
                    copy.write_row((t, node_id, True, "push", int(t.timestamp()) // 15))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True, help="a superuser DSN; a scratch database is created and dropped")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    name = f"fs_bench_alerts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(args.dsn)
    params["dbname"] = name
    dsn = make_conninfo(**params)
    try:
        init_database(dsn, mode="plain")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        with psycopg.connect(dsn, autocommit=True) as conn:
            op = conn.execute("INSERT INTO operators (name, token_hash) VALUES ('bench', %s) RETURNING operator_id",
                              (tokens.token_hash(tokens.new_token("operator")),)).fetchone()[0]
            node_ids = [r[0] for r in conn.execute(
                "INSERT INTO nodes (operator_id, name, interval_s, grace_s, token_hash, registered_at)"
                " SELECT %s, 'n' || i, 15, 45, sha256(i::text::bytea), %s - interval '1 day'"
                " FROM generate_series(1, %s) i RETURNING node_id", (op, now, args.nodes)).fetchall()]
            conn.execute("INSERT INTO alert_channels (operator_id, kind, target) VALUES (%s, 'webhook',"
                         " 'https://hooks.example/x')", (op,))
            _copy_observations(conn, node_ids, [now - timedelta(seconds=s) for s in range(120, 0, -15)])
            conn.execute("ANALYZE")
        evaluator = Evaluator(flap_window=timedelta(hours=1))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            started = time.perf_counter()
            await evaluator.run_round(aconn, now=now)
            first = time.perf_counter() - started
            steady = []
            down = set(node_ids[:: 100])  # 1% of the nodes stop after the steady rounds
            t = now
            with psycopg.connect(dsn, autocommit=True) as conn:
                for _ in range(args.rounds):
                    t += timedelta(seconds=10)
                    _copy_observations(conn, node_ids, [t - timedelta(seconds=5)])
                    started = time.perf_counter()
                    result = await evaluator.run_round(aconn, now=t)
                    steady.append(time.perf_counter() - started)
            t += timedelta(seconds=60)  # past their grace
            with psycopg.connect(dsn, autocommit=True) as conn:
                _copy_observations(conn, node_ids, [t - timedelta(seconds=s) for s in range(50, 0, -15)], skip=down)
            started = time.perf_counter()
            result = await evaluator.run_round(aconn, now=t)
            outage = time.perf_counter() - started
        print(f"nodes {args.nodes}: first round {first * 1000:.0f} ms; steady round median "
              f"{statistics.median(steady) * 1000:.0f} ms (max {max(steady) * 1000:.0f}); round with "
              f"{len(result.messages)} nodes going down {outage * 1000:.0f} ms")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
