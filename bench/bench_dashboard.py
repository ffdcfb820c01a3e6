"""Benchmark: the explorer's API and pages at 100,000 GPUs (issue 5's targets).

Loads 12,500 nodes x 8 GPUs (bench/bench_snapshot.py's load, placed around
the present so the fleet is live while the benchmark runs), then measures:

1. ``fleet_snapshot`` itself on fresh connections: the baseline, in the same run.
2. ``/api/v1/fleet``: the first, uncached request (a fresh cache) against the
   baseline + 50 ms; then cached requests, p95 against 20 ms.
3. A page of the GPU and node tables at 100,000 GPUs (sorted, filtered, deep
   offsets), server time, p95 against 150 ms; and the first, uncached build.
4. 200 concurrent visitors refreshing the overview (the page's own Dash
   callback, recorded from Chromium, and /api/v1/fleet) against
   ``fleetscope dashboard`` under gunicorn for a minute: snapshot
   computations counted against snapshot ticks elapsed (target: at most one
   per tick).

With ``--history-days`` (default 7), the demo fleet's simulated history
(collector/sim_history.py: 134 nodes, a week of 60 s observations,
telemetry and jobs) is written beside the load, so the database holds a
week, and the charts' series endpoints (issue 16) are timed too.

Server times (2, 3) are measured in-process through Flask's test client: the
time inside the WSGI app, with no network. Run:

    python bench/bench_dashboard.py                 # full size
    python bench/bench_dashboard.py --nodes 1000 --visit-s 20   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_snapshot  # noqa: E402

from dashboard.app import create_app  # noqa: E402
from dashboard.service import Service  # noqa: E402
from fleetscope.snapshot import SNAPSHOT_TICK_S, default_as_of, snapshot_from_dsn  # noqa: E402

DATABASE = "fleetscope_bench_dashboard"
# The loaded fleet reports until this long after the load: the benchmark runs within it.
LIVE_FOR = timedelta(minutes=20)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def timed_get(client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (url, response.status_code, response.data[:200])
    return elapsed


def record_overview_callback(base: str) -> tuple[str, bytes] | None:
    """The overview's Dash callback request as Chromium sends it (None without chromium/playwright)."""
    chromium = shutil.which("chromium")
    if not chromium:
        return None
    from playwright.sync_api import sync_playwright

    found: list[tuple[str, bytes]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.on("request", lambda r: found.append((r.url, r.post_data_buffer))
                if "_dash-update-component" in r.url and b"_pages_content" in (r.post_data_buffer or b"") else None)
        # The first render of a fresh server computes each point of the 24 h chart
        # once (a snapshot's counts each, 0.6-2 s at 100,000 GPUs on the 2-core box).
        page.goto(base + "/", wait_until="networkidle", timeout=900_000)
        page.wait_for_selector("#fleet-snapshot_sha256", timeout=900_000)
        browser.close()
    return found[0] if found else None


def visitors(base: str, callback: tuple[str, bytes] | None, *, n: int, seconds: float) -> dict:
    """``n`` visitors, each refreshing the overview (callback + API) in a loop for ``seconds``."""
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def visit() -> None:
        while time.monotonic() < stop:
            for url, body in ([callback] if callback else []) + [(base + "/api/v1/fleet", None)]:
                started = time.perf_counter()
                try:
                    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=120) as response:
                        response.read()
                    with lock:
                        latencies.append((time.perf_counter() - started) * 1000)
                except Exception:  # noqa: BLE001 (counted, reported)
                    with lock:
                        errors[0] += 1
            time.sleep(1.0)  # a visitor's refresh

    threads = [threading.Thread(target=visit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": len(latencies), "errors": errors[0], "latency_ms_p50": round(pct(latencies, 0.5), 1),
            "latency_ms_p95": round(pct(latencies, 0.95), 1), "requests_per_s": round(len(latencies) / seconds, 1)}


def write_demo_history(dsn: str, days: float) -> dict:
    """The demo fleet with ``days`` of simulated history (collector/sim_history.py), beside the load."""
    from collector.demo import DEFAULT_PRICE, DEMO_INTERVAL_S, DEMO_SEED, PRICES
    from collector.sim_history import write_history
    from exporters.simfleet import load_fleet, register_fleet
    from fleetscope import rollups

    fleet = load_fleet(DEMO_SEED)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The load inserts its ids explicitly: move the sequences past them.
        conn.execute("SELECT setval('operators_operator_id_seq', (SELECT max(operator_id) FROM operators))")
        conn.execute("SELECT setval('nodes_node_id_seq', (SELECT max(node_id) FROM nodes))")
        ids = register_fleet(conn, fleet, "http://127.0.0.1:9/", "demo-fleet", interval_s=DEMO_INTERVAL_S)
        history = write_history(conn, fleet, ids, end=datetime.now(timezone.utc), days=days,
                                 interval_s=DEMO_INTERVAL_S, running_job_id=lambda n: f"demo-bench-{n}",
                                 price_of=lambda host: PRICES.get(host.model or "", DEFAULT_PRICE))
        rollups.refresh(conn, up_to=bench_snapshot.AS_OF)
        conn.execute("VACUUM ANALYZE")
    print(f"wrote {days:g} days of simulated history for {len(ids)} demo nodes in {history.seconds:.1f} s "
          f"({history.observations:,} observations)")
    return {"days": days, "nodes": len(ids), "observations": history.observations, "seconds": round(history.seconds, 1),
            "node_id": ids[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="superuser DSN of the server to use (default: embedded)")
    parser.add_argument("--nodes", type=int, default=12_500)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--hours", type=int, default=1)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--visit-s", type=float, default=60)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--history-days", type=float, default=7.0,
                        help="days of the demo's simulated history written beside the load (0: none; issue 16)")
    args = parser.parse_args()

    # The load of bench_snapshot, placed so that its fleet is live now.
    bench_snapshot.DATABASE = DATABASE
    bench_snapshot.AS_OF = datetime.now(timezone.utc).replace(microsecond=0) + LIVE_FOR
    admin = bench_snapshot.admin_dsn(args)
    dsn = bench_snapshot.load(admin, args)
    history = write_demo_history(dsn, args.history_days) if args.history_days > 0 else None
    with psycopg.connect(dsn) as conn:
        gpus = conn.execute("SELECT count(DISTINCT gpu_uuid) FROM gpus").fetchone()[0]
        observations = conn.execute("SELECT count(*) FROM observations").fetchone()[0]
        version = conn.execute("SHOW server_version").fetchone()[0]

    # 1. The baseline: the snapshot itself, on fresh connections (as an uncached request has them).
    baseline = []
    for _ in range(args.runs):
        started = time.perf_counter()
        snapshot_from_dsn(dsn, as_of=default_as_of())
        baseline.append((time.perf_counter() - started) * 1000)

    # 2. /api/v1/fleet, first request on a fresh cache (fresh process state), then cached.
    first_fleet, first_tables = [], []
    for _ in range(args.runs):
        ex = Service(dsn, cache_dir=Path(tempfile.mkdtemp(prefix="fs-bench-cache-")))
        client = create_app(ex).server.test_client()
        ex.pool().wait()
        first_fleet.append(timed_get(client, "/api/v1/fleet"))
        first_tables.append(timed_get(client, "/api/v1/gpus?limit=50"))
        ex.close()
        shutil.rmtree(ex.cache.directory, ignore_errors=True)
    ex = Service(dsn, cache_dir=Path(tempfile.mkdtemp(prefix="fs-bench-cache-")))
    client = create_app(ex).server.test_client()
    client.get("/api/v1/fleet")
    client.get("/api/v1/gpus?limit=1")
    cached = [timed_get(client, "/api/v1/fleet") for _ in range(500)]

    # 3. Table pages at 100,000 GPUs, cached tables: sorts, filters and deep offsets.
    pages = ["/api/v1/gpus?limit=50", "/api/v1/gpus?limit=50&offset=99900", "/api/v1/gpus?sort=gpu_uuid&order=desc",
             "/api/v1/gpus?state=hired&sort=model", "/api/v1/gpus?q=node-1234", "/api/v1/gpus?verification=unverified",
             "/api/v1/nodes?limit=50&sort=name&order=desc", "/api/v1/nodes?status=down", "/api/v1/nodes?q=node-99"]
    page_ms: dict[str, list[float]] = {p: [] for p in pages}
    for _ in range(args.runs):
        for p in pages:
            if ex.tick() != ex.tables().as_of:  # a tick turned: build the new tables outside the timing
                ex.tables()
            page_ms[p].append(timed_get(client, p))
    all_pages = [v for values in page_ms.values() for v in values]
    # The charts' series (issue 16) over each range: first (uncached) and cached, server time.
    series_ms: dict[str, float] = {}
    node = history["node_id"] if history else 1
    for rng in ("24h", "7d", "30d"):
        for name, url in (("fleet", f"/api/v1/fleet/series?range={rng}"), ("node", f"/api/v1/nodes/{node}/series?range={rng}")):
            series_ms[f"{name}_{rng}_first"] = round(timed_get(client, url), 1)
            series_ms[f"{name}_{rng}_cached"] = round(timed_get(client, url), 2)
    ex.close()

    # 4. 200 concurrent visitors on gunicorn.
    port = bench_snapshot_free_port()
    cache_dir = Path(tempfile.mkdtemp(prefix="fs-bench-cache-"))
    server = subprocess.Popen([sys.executable, "-m", "fleetscope.cli", "dashboard", "--dsn", dsn, "--port", str(port),
                               "--cache-dir", str(cache_dir)], stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/api/v1/fleet", timeout=60).read()
                break
            except OSError:
                time.sleep(0.2)
        started = time.perf_counter()
        callback = record_overview_callback(base)
        first_overview_s = time.perf_counter() - started
        log_before = len(Service(dsn, cache_dir=cache_dir).cache.computations())
        first_tick = default_as_of()
        load = visitors(base, callback, n=args.visitors, seconds=args.visit_s)
        last_tick = default_as_of()
        computed = Service(dsn, cache_dir=cache_dir).cache.computations()[log_before:]
    finally:
        server.terminate()
        server.wait(30)
    ticks = int((last_tick - first_tick).total_seconds()) // SNAPSHOT_TICK_S + 1
    snapshots = sum(1 for line in computed if line.split()[2].startswith("snapshot-"))

    base_ms = statistics.median(baseline)
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": bench_snapshot.machine(),
        "postgres": version, "nodes": args.nodes, "gpus": gpus, "observations": observations,
        "history": history, "series_ms": series_ms,
        "snapshot_baseline_ms_median": round(base_ms, 1),
        "fleet_first_request_ms_median": round(statistics.median(first_fleet), 1),
        "fleet_first_minus_baseline_ms": round(statistics.median(first_fleet) - base_ms, 1),
        "fleet_cached_ms_p50": round(pct(cached, 0.5), 2), "fleet_cached_ms_p95": round(pct(cached, 0.95), 2),
        "tables_first_build_ms_median": round(statistics.median(first_tables), 1),
        "table_page_ms_p50": round(pct(all_pages, 0.5), 1), "table_page_ms_p95": round(pct(all_pages, 0.95), 1),
        "table_page_ms_median_by_page": {p: round(statistics.median(v), 1) for p, v in page_ms.items()},
        "visitors": args.visitors, "visit_s": args.visit_s, "overview_callback_recorded": callback is not None,
        "first_overview_render_s": round(first_overview_s, 1),
        **{f"visitors_{k}": v for k, v in load.items()},
        "snapshot_ticks_elapsed": ticks, "snapshot_computations": snapshots,
        "computations_per_tick": round(snapshots / ticks, 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def bench_snapshot_free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    os.environ.setdefault("FLEETSCOPE_DATA_DIR", "/var/tmp/fleetscope-bench")
    main()
