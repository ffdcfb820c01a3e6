"""The remote_write receiver beside the push path: samples per second and collector CPU per 1,000 samples.

One collector process (``python -m collector.process``, production writer, the
embedded PostgreSQL server) receives the same fleet's samples two ways, in
the same run, interleaved round by round (A B A B ...; other work on the
machine then weighs on both alike):

- push: each node POSTs its exporter's text to /api/v1/push with its node
  token (the path the receiver is measured against);
- remote_write: the same nodes' samples, as a Prometheus server forwards
  them (every series labelled with fleetscope_node_id, job and instance, and
  Prometheus' five report series, ``up`` among them), in WriteRequests of
  at most MAX_SAMPLES_PER_SEND samples (Prometheus' queue_config default),
  snappy-compressed, with the operator token, CONCURRENCY in flight. Requests
  hold whole nodes here (Prometheus may cut a node's scrape in two; the
  receiver then joins the parts, tests/test_remote_write_payloads.py), so
  both paths do the same work.

Each path has its own nodes (so neither waits out the other's per-node
rate) with the same payload shape, dcgm-exporter's default counters for 8
A100s, with GPU UUIDs of their own. The collector's CPU is utime + stime of
its process from /proc/PID/stat over each round; the load generator runs in
this process and is not counted. Both paths store the same rows per node and
round (one observation, 8 GPU rows), so the database's share is the same and
left out. Then the receivers alone, in this process, on the same payloads:
the push's parse and liveness rule against remote_write's unsnappy, decode,
scrape assembly and liveness rule (what each path adds per sample before the
shared writer), medians of RECEIVER_REPEATS A/B pairs; and remote_write again
with requests cut as a Prometheus shard cuts them (every MAX_SAMPLES_PER_SEND
samples, whatever node they belong to, the cuts moved by CUT_STEP each time:
scrapes straddle requests, and no request repeats an earlier one whole). Samples per second is a round's samples over its wall time, with
the requests made beforehand (Prometheus' work, not the collector's), both
paths with CONCURRENCY requests in flight. Each remote_write request's
latency (its 204 waits for the write: written or spooled) is also reported. Rounds are spaced by the nodes' push spacing (interval 5 s: 2.5 s).

    FLEETSCOPE_DATA_DIR=/tmp/x FLEETSCOPE_PG_PORT=5433 python bench/bench_remote_write.py [--nodes 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.prompb import encode  # noqa: E402
from fleetscope.registry import create_operator, register_node  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.remotewrite import HEADERS, series_of  # noqa: E402

PAYLOAD = ROOT / "tests/fixtures/payloads/dcgm_exporter_default_a100x8.prom"
DATABASE = "bench_remote_write"
MAX_SAMPLES_PER_SEND = 2000
# The default node interval: a node may send every 7.5 s, and samples older
# than 15 s are stale (the warm-up round, token lookups and all, must fit).
INTERVAL_S = 15
ROUND_SPACING_S = 7.6
CONCURRENCY = 16
HZ = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def fresh_database() -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from fleetscope.embedded import embedded_server
    from fleetscope.migrate import init_database

    server = embedded_server()
    server.ensure_running()
    admin = server.dsn("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    params = conninfo_to_dict(admin)
    params["dbname"] = DATABASE
    dsn = make_conninfo(**params)
    init_database(dsn)
    return dsn


def node_text(i: int) -> str:
    """The recorded payload with GPU UUIDs of node ``i``'s own."""
    return re.sub(r"GPU-[0-9a-fA-F]{4}", f"GPU-{i:04x}", PAYLOAD.read_text())


async def push_round(session, base: str, pushes: list[tuple[str, bytes]]) -> int:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(token: str, body: bytes) -> None:
        async with sem, session.post(f"{base}/api/v1/push", data=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "text/plain; version=0.0.4"}) as r:
            assert r.status == 204, (r.status, await r.text())
    await asyncio.gather(*(one(t, b) for t, b in pushes))
    return len(pushes)


def fleet_series(texts: dict[int, str]) -> list[list]:
    """Each node's series as Prometheus forwards them (labels and one sample each)."""
    return [series_of(text, node_id, 0, instance=f"host{node_id}:9400") for node_id, text in texts.items()]


def write_bodies(fleet: list) -> list[bytes]:
    """One scrape of every node, stamped now, as Prometheus would forward it."""
    t_ms = int(time.time() * 1000)
    bodies, chunk = [], []
    for node_series in fleet:
        if chunk and len(chunk) + len(node_series) > MAX_SAMPLES_PER_SEND:
            bodies.append(encode(chunk))
            chunk = []
        chunk.extend((labels, [(t_ms, value)]) for labels, [(_, value)] in node_series)
    if chunk:
        bodies.append(encode(chunk))
    return bodies


def cut_bodies(fleet: list, first: int) -> list[bytes]:
    """One scrape of every node as a Prometheus shard cuts it: MAX_SAMPLES_PER_SEND samples a
    request whoever they belong to, the first request ``first`` samples short (so cuts move)."""
    t_ms = int(time.time() * 1000)
    samples = [(labels, [(t_ms, value)]) for node_series in fleet for labels, [(_, value)] in node_series]
    first %= MAX_SAMPLES_PER_SEND
    cuts = [0, *range(first or MAX_SAMPLES_PER_SEND, len(samples), MAX_SAMPLES_PER_SEND), len(samples)]
    return [encode(samples[a:b]) for a, b in zip(cuts, cuts[1:]) if b > a]


async def write_round(session, base: str, token: str, bodies: list[bytes], latencies: list[float]) -> int:
    """Send one round's requests, CONCURRENCY at a time (as that many queue shards); returns how many."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(body: bytes) -> None:
        async with sem:
            t0 = time.perf_counter()
            async with session.post(f"{base}/api/v1/write", data=body,
                                    headers={**HEADERS, "Authorization": f"Bearer {token}"}) as r:
                assert r.status == 204, (r.status, await r.text())
            latencies.append(time.perf_counter() - t0)
    await asyncio.gather(*(one(b) for b in bodies))
    return len(bodies)


async def run(nodes: int, rounds: int) -> dict:
    dsn = fresh_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, operator_token = create_operator(conn, "bench")
        push_nodes = [register_node(conn, operator_id=operator_id, name=f"p{i}", interval_s=INTERVAL_S)
                      for i in range(nodes)]
        rw_nodes = [register_node(conn, operator_id=operator_id, name=f"w{i}", interval_s=INTERVAL_S)
                    for i in range(nodes)]
    pushes = [(n.node_token, node_text(i).encode()) for i, n in enumerate(push_nodes)]
    texts = {n.node_id: node_text(nodes + i) for i, n in enumerate(rw_nodes)}
    fleet = fleet_series(texts)
    samples_per_node = len(fleet[0]) - 5  # the exporter's samples, not Prometheus' report series
    port = free_port()
    spool = Path(tempfile.mkdtemp(prefix="bench-rw-"))
    env = {**os.environ, "FLEETSCOPE_SPOOL_DIR": str(spool), "FLEETSCOPE_PUBLISH_INTERVAL_S": "0",
           "FLEETSCOPE_INTEGRITY_INTERVAL_S": "0", "FLEETSCOPE_PROOF": "0", "FLEETSCOPE_ALERTS": "0",
           "FLEETSCOPE_SCRAPE": "0"}
    collector = subprocess.Popen([sys.executable, "-m", "collector.process", "--dsn", dsn, "--port", str(port)],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    cpu: dict[str, list[float]] = {"push": [], "remote_write": []}
    wall: dict[str, list[float]] = {"push": [], "remote_write": []}
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            for i in range(rounds + 1):  # round 0 warms both paths (caches, token lookups)
                for path in ("push", "remote_write") if i % 2 == 0 else ("remote_write", "push"):
                    bodies = write_bodies(fleet) if path == "remote_write" else []  # (the sender's work)
                    c0, t0 = cpu_s(collector.pid), time.perf_counter()
                    if path == "push":
                        await push_round(session, base, pushes)
                    else:
                        await write_round(session, base, operator_token, bodies, latencies)
                    c1, t1 = cpu_s(collector.pid), time.perf_counter()
                    if i:
                        cpu[path].append(c1 - c0)
                        wall[path].append(t1 - t0)
                await asyncio.sleep(ROUND_SPACING_S)
            async with session.get(f"{base}/metrics") as r:
                outcomes = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in (await r.text()).splitlines()
                            if line.startswith("fleetscope_collector_remote_write_samples_total{")}
    finally:
        collector.terminate()
        collector.wait(30)
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = dict(conn.execute("SELECT n.name LIKE 'w%%', count(*) FROM observations o JOIN nodes n USING "
                                   "(node_id) WHERE o.ok GROUP BY 1").fetchall())
    per_round = nodes * samples_per_node
    out = {"nodes": nodes, "samples_per_round": per_round, "rounds": rounds,
           "observations": {"push": stored.get(False, 0), "remote_write": stored.get(True, 0)},
           "remote_write_samples": outcomes,
           "remote_write_request_ms_median": round(statistics.median(latencies) * 1000, 1)}
    # Both paths must have stored every round of every node, or the figures compare different work.
    assert stored.get(False) == stored.get(True) == nodes * (rounds + 1), out
    for path in cpu:
        out[path] = {"cpu_ms_per_1000": statistics.median(cpu[path]) / per_round * 1e6,
                     "samples_per_s": per_round / statistics.median(wall[path]),
                     "cpu_s_rounds": [round(x, 3) for x in cpu[path]]}
    out["cpu_ratio_rw_over_push"] = out["remote_write"]["cpu_ms_per_1000"] / out["push"]["cpu_ms_per_1000"]
    return out


RECEIVER_REPEATS = 7
# How far the cuts move between requests of the "cut elsewhere" rounds (not a
# divisor of MAX_SAMPLES_PER_SEND nor of a node's 173 series).
CUT_STEP = 677


def receivers_only(nodes: int) -> dict:
    """CPU per 1,000 samples of each receiver's own work, in this process (see the module doc)."""
    from collector.liveness import refusal
    from collector.parse import PayloadParser, SeriesCache
    from collector.remote_write import RemoteWriteReceiver
    from collector.selfmetrics import SelfMetrics
    from collector.settings import CollectorSettings

    texts = {i: node_text(i) for i in range(1, nodes + 1)}
    bodies = {i: t.encode() for i, t in texts.items()}
    fleet = fleet_series(texts)
    parser, caches = PayloadParser(), {i: SeriesCache() for i in texts}
    receiver = RemoteWriteReceiver(auth=None, pool=None, appendable=None,
                                   metrics=SelfMetrics(collector_id="bench", shard="0/1"),
                                   settings=CollectorSettings(dsn="postgresql://unused"))

    def push() -> float:
        t0 = time.process_time()
        for i, body in bodies.items():
            refusal(parser.parse(body, cache=caches[i]))
        return time.process_time() - t0

    def remote_write(cut_at: int = 0) -> float:
        requests = write_bodies(fleet) if not cut_at else cut_bodies(fleet, cut_at)
        now = datetime.now(timezone.utc)
        t0 = time.process_time()
        for body in requests:
            by_node, reports = receiver._decode(receiver._unsnappy(body))
            outcomes: dict[str, int] = {}
            for node_id in by_node.keys() | reports.keys():
                receiver._node_batch(node_id, INTERVAL_S, by_node.get(node_id), reports.get(node_id, []),
                                     now, now.timestamp() * 1000, outcomes, [])
        return time.process_time() - t0

    push(), remote_write()  # warm: caches and layouts
    a, b, c = [], [], []
    for i in range(RECEIVER_REPEATS):
        a.append(push())
        b.append(remote_write())
        c.append(remote_write(cut_at=(i + 1) * CUT_STEP))
    per = nodes * (len(fleet[0]) - 5) / 1000
    out = {"push_ms_per_1000": statistics.median(a) / per * 1000,
           "remote_write_ms_per_1000": statistics.median(b) / per * 1000,
           "remote_write_cut_elsewhere_ms_per_1000": statistics.median(c) / per * 1000}
    out["ratio_rw_over_push"] = out["remote_write_ms_per_1000"] / out["push_ms_per_1000"]
    out["ratio_cut_elsewhere_over_push"] = out["remote_write_cut_elsewhere_ms_per_1000"] / out["push_ms_per_1000"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(run(args.nodes, args.rounds))
    result["receivers_only"] = receivers_only(args.nodes)
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
