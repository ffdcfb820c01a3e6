"""Scrape throughput and CPU: fleetscope's scraper beside Prometheus, on the simulated fleet.

Layout of one run (everything on 127.0.0.1, every loop bounded in count and time):

- an embedded PostgreSQL server in a temporary directory, migrated, with the
  simulated hosts registered as nodes (interval 15 s);
- the simulator (``python -m exporters.simfleet --ring 2``) in its own process,
  so its CPU is never counted; each host has 8 GPUs;
- then, one at a time against that simulator: the collector's scraper in a
  child process (this file with ``--child``: ``Scraper`` plus, with
  ``--write``, the real ``collector.writer.Writer``; otherwise a counting
  appendable: "parse only, no write"), and Debian's ``prometheus`` binary
  scraping the same hosts through ``file_sd`` with ``__metrics_path__``.

For each scraper: warm up, then read utime+stime from /proc/PID/stat over a
fixed window and count the scrapes done in it (the child's own counters; for
Prometheus ``count_over_time(up[window])``). Prints one JSON object per run and
a summary table with medians.

    python bench/bench_scrape.py --targets 6000 --runs 3            # CPU beside Prometheus
    python bench/bench_scrape.py --targets 30000 --runs 1 --no-prometheus   # throughput, RSS
    python bench/bench_scrape.py --targets 30000 --runs 2 --no-prometheus --write --compare /tmp/before
        # before/after: each run times the collector of the checkout at /tmp/before, then this one's,
        # against the same simulator and database (A B A B ...)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INTERVAL_S = 15
GPUS = 8
HZ = os.sysconf("SC_CLK_TCK")
SIM_START_LIMIT_S = 600      # pre-rendering 30,000 hosts takes ~3 minutes here
PROM_START_LIMIT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_http(url: str, limit_s: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {limit_s} s")


# -- the collector child ---------------------------------------------------------


class CountingAppendable:
    """Counts committed batches and drops them: the "parse only, no write" mode."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0

    def appender(self) -> CountingAppendable._Appender:
        return CountingAppendable._Appender(self)

    class _Appender:
        __slots__ = ("owner", "batches")

        def __init__(self, owner: CountingAppendable) -> None:
            self.owner = owner
            self.batches: list = []

        def append(self, batch) -> None:
            self.batches.append(batch)

        async def commit(self) -> None:
            for b in self.batches:
                if b.ok:
                    self.owner.ok += 1
                else:
                    self.owner.failed += 1

        def rollback(self) -> None:
            self.batches.clear()


async def child(args: argparse.Namespace) -> None:
    """Run the scraper for warmup + window seconds; print what the window saw as JSON."""
    from prometheus_client import CollectorRegistry

    from collector.scrape import Scraper

    registry = CollectorRegistry()
    pid = os.getpid()

    def scrapes() -> dict[str, float]:
        out = {r: registry.get_sample_value("fleetscope_collector_scrapes_total", {"result": r}) or 0.0
               for r in ("ok", "timeout", "error", "http", "unparsable")}
        out["missed"] = registry.get_sample_value("fleetscope_collector_scrape_slots_missed_total") or 0.0
        return out

    async def measure(appendable) -> dict:
        async with Scraper(args.dsn, appendable, collector_id="bench", registry=registry,
                           concurrency=args.concurrency):
            await asyncio.sleep(args.warmup)
            c0, s0, t0 = cpu_s(pid), scrapes(), time.monotonic()
            await asyncio.sleep(args.window)
            c1, s1, t1 = cpu_s(pid), scrapes(), time.monotonic()
            rss = rss_mb(pid)
        return {"cpu_s": c1 - c0, "wall_s": t1 - t0, "rss_mb": rss,
                **{k: s1[k] - s0[k] for k in s1}}

    if args.write:
        from collector.writer import Writer
        from fleetscope.migrate import database_mode

        import psycopg
        with psycopg.connect(args.dsn) as conn:
            mode = database_mode(conn)
        spool = Path(tempfile.mkdtemp(prefix="bench-scrape-spool-"))
        try:
            async with Writer(args.dsn, spool_dir=spool, collector_id="bench", mode=mode,
                              registry=registry) as writer:
                result = await measure(writer)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
    else:
        result = await measure(CountingAppendable())
    print(json.dumps(result), flush=True)


# -- the parent ----------------------------------------------------------------


def run_collector(dsn: str, args: argparse.Namespace, script: str = __file__) -> dict:
    """One collector child: this checkout's (``script`` of another checkout: that one's collector)."""
    cmd = [sys.executable, script, "--child", "--dsn", dsn, "--warmup", str(args.warmup),
           "--window", str(args.window), "--concurrency", str(args.concurrency)]
    if args.write:
        cmd.append("--write")
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=args.warmup + args.window + 120)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-5000:])
        out.check_returncode()
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["scrapes"] = r["ok"] + r["timeout"] + r["error"] + r["http"] + r["unparsable"]
    r["per_s"] = r["scrapes"] / r["wall_s"]
    r["cpu_per_1000"] = 1000 * r["cpu_s"] / max(r["scrapes"], 1)
    return r


def run_prometheus(targets_file: Path, n: int, args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-scrape-prom-"))
    port = free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 15s\n  scrape_timeout: 10s\n"
        "scrape_configs:\n  - job_name: sim\n    file_sd_configs:\n"
        f"      - files: ['{targets_file}']\n")
    proc = subprocess.Popen(
        [args.prometheus, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "w"))
    api = f"http://127.0.0.1:{port}/api/v1/query?query="

    def query(q: str) -> float:
        with urllib.request.urlopen(api + urllib.parse.quote(q), timeout=10) as resp:
            data = json.load(resp)["data"]["result"]
        return float(data[0]["value"][1]) if data else float("nan")

    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", PROM_START_LIMIT_S, proc)
        time.sleep(args.warmup)
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        time.sleep(args.window)
        c1, t1 = cpu_s(proc.pid), time.monotonic()
        window = round(t1 - t0)
        scrapes = query(f"sum(count_over_time(up[{window}s]))")
        r = {"cpu_s": c1 - c0, "wall_s": t1 - t0, "scrapes": scrapes, "rss_mb": rss_mb(proc.pid),
             "up": query("sum(up)"), "targets": n,
             "avg_scrape_duration_s": query("avg(scrape_duration_seconds)")}
        r["per_s"] = scrapes / r["wall_s"]
        r["cpu_per_1000"] = 1000 * r["cpu_s"] / max(scrapes, 1)
        return r
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=6000, help="simulated hosts (8 GPUs each), scraped every 15 s")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=float, default=35.0, help="seconds before the window (cold parse caches)")
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=1024)
    p.add_argument("--write", action="store_true", help="write through collector.writer.Writer to the DB")
    p.add_argument("--no-prometheus", action="store_true")
    p.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    p.add_argument("--compare", metavar="ROOT",
                   help="another checkout: each run also times its collector (first), against the same simulator")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dsn", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        asyncio.run(child(args))
        return
    if not 1 <= args.targets <= 50_000 or not 1 <= args.runs <= 10:
        p.error("--targets 1..50000, --runs 1..10")
    # The simulated hosts are on 127.0.0.1, which the scraper refuses unless
    # told (issue 15, docs/security.md); the children inherit this.
    os.environ["FLEETSCOPE_ALLOW_PRIVATE_TARGETS"] = "1"

    from exporters.simfleet import load_fleet, register_fleet
    from fleetscope.embedded import embedded_server
    from fleetscope.migrate import init_database

    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix="bench-scrape-"))
    tmp.chmod(0o755)  # the embedded server may run as another user
    server = embedded_server(tmp / "db", free_port())
    sim = None
    try:
        dsn = server.ensure_running()
        init_database(dsn, mode="plain")
        scenario = [{"profile": "healthy", "count": args.targets, "gpus": GPUS, "hired_fraction": 0.5}]
        (tmp / "scenario.json").write_text(json.dumps(scenario))
        sim_port = free_port()
        t = time.monotonic()
        sim = subprocess.Popen(
            [sys.executable, "-m", "exporters.simfleet", "--scenario", str(tmp / "scenario.json"),
             "--port", str(sim_port), "--ring", "2", "--targets-file", str(tmp / "targets.json")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "sim.log", "w"))
        fleet = load_fleet(1, scenario)
        with psycopg.connect(dsn, autocommit=True) as conn:
            register_fleet(conn, fleet, f"http://127.0.0.1:{sim_port}", "bench", interval_s=INTERVAL_S)
        wait_http(f"http://127.0.0.1:{sim_port}/", SIM_START_LIMIT_S, sim)
        print(f"simulator ready with {args.targets} hosts after {time.monotonic() - t:.0f} s; "
              f"its RSS {rss_mb(sim.pid):.0f} MB", file=sys.stderr, flush=True)
        results = {"collector": [], "prometheus": []}
        if args.compare:
            results = {"before": [], **results}
        for run in range(args.runs):
            if args.compare:
                r = run_collector(dsn, args, str(Path(args.compare).resolve() / "bench" / "bench_scrape.py"))
                results["before"].append(r)
                print(json.dumps({"run": run, "who": "before", "root": args.compare, **r}), flush=True)
            r = run_collector(dsn, args)
            results["collector"].append(r)
            print(json.dumps({"run": run, "who": "collector", **r}), flush=True)
            if not args.no_prometheus:
                r = run_prometheus(tmp / "targets.json", args.targets, args)
                results["prometheus"].append(r)
                print(json.dumps({"run": run, "who": "prometheus", **r}), flush=True)
        expected = args.targets / INTERVAL_S
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
              f"{args.targets} targets x {GPUS} GPUs every {INTERVAL_S} s = {expected:.0f} scrapes/s expected; "
              f"collector mode: {'write (Writer)' if args.write else 'parse only, no write'}")
        print("| scraper | scrapes/s | CPU-s per 1,000 scrapes | RSS MB | missed slots |")
        print("|---|---:|---:|---:|---:|")
        for who, rs in results.items():
            if rs:
                med = {k: statistics.median(r[k] for r in rs) for k in ("per_s", "cpu_per_1000", "rss_mb")}
                missed = statistics.median(r.get("missed", 0) for r in rs)
                print(f"| {who} | {med['per_s']:.0f} | {med['cpu_per_1000']:.3f} | {med['rss_mb']:.0f} | {missed:.0f} |")
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sim.kill()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
