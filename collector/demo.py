"""``fleetscope demo``: everything, on the embedded database, with one command.

Starts (or reuses) the embedded PostgreSQL server and its schema, serves the
simulated demo fleet (exporters/simfleet.py, DEMO_SCENARIO) and registers its
hosts as scrape targets, runs the collector with its scraper, writer and
maintenance loop, gives each simulated host a proof client (a thread that
proves its GPUs with NumPy at the host's simulated speed when a proof-of-GPU
round asks; the cheaters among them fail), and plays a small marketplace
that posts jobs for the hired hosts through the collector's own
``POST /api/v1/jobs`` — the same path the real marketplace uses — so
GPU-hours and revenue move. Prints the URLs and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import aiohttp

from collector.process import run as run_collector
from collector.settings import CollectorSettings
from exporters.simfleet import SimServer, load_fleet, register_fleet, start_provers, stop_provers
from fleetscope import db
from fleetscope.migrate import init_database
from fleetscope.registry import rotate_node_token

log = logging.getLogger("fleetscope.demo")

DEMO_OPERATOR = "demo-fleet"
DEMO_SEED = 2026
# Rough market prices (USD per GPU-hour) by model, for the simulated ledger.
PRICES = {
    "NVIDIA H100 80GB HBM3": Decimal("2.49"), "NVIDIA A100-SXM4-80GB": Decimal("1.29"),
    "NVIDIA L40S": Decimal("0.86"), "NVIDIA GeForce RTX 4090": Decimal("0.39"),
    "NVIDIA GeForce RTX 3090": Decimal("0.22"),
}
DEFAULT_PRICE = Decimal("0.50")
MARKET_TICK_S = 30          # how often a job ends and another starts
# Proof-of-GPU rounds every ~20 s for half of the waiting hosts, sized so that
# the simulated hosts prove on this machine's CPUs in time (an A100 claim: C =
# 256 x 256, k = 512, 67 MFLOP; an H100's 201): at 1e-6 a full round was 370
# GFLOP and honest hosts came in late on 2 cores. Verified counts appear within
# the demo's first minute or two.
PROOF_INTERVAL_S = 20.0
PROOF_SHARE = 0.5
PROOF_SCALE = 1e-7
# The simulated past written before the services start (collector/sim_history.py).
# Its cost is one observation per node per slot: a week at a 60 s interval is
# 1.3 M rows for the demo's 131 hosts, written in a few seconds (docs/simulate.md);
# at 15 s it would be 5.3 M and take four times as long before the demo answers.
HISTORY_DAYS = 7.0
DEMO_INTERVAL_S = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address of every demo server")
    parser.add_argument("--collector-port", type=int, default=9300)
    parser.add_argument("--sim-port", type=int, default=9400, help="the simulated hosts' /metrics")
    parser.add_argument("--dashboard-port", type=int, default=8050, help="the explorer (dashboard and JSON API)")
    parser.add_argument("--interval", type=int, default=DEMO_INTERVAL_S, help="the nodes' interval, s")
    parser.add_argument("--history-days", type=float, default=HISTORY_DAYS,
                        help="days of simulated history written before the services start (0: none); "
                             "only into a database whose demo fleet has no observations yet")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(timezone.utc)
    # Said at once: a fresh database gets its simulated week before anything
    # answers (about 10 s on 2 cores), which would otherwise look like a hang.
    print("fleetscope demo: starting its database, collector and explorer"
          + (f"; a fresh database first gets {args.history_days:g} days of simulated history (about 10 s)"
             if args.history_days > 0 else ""), flush=True)
    dsn = db.resolve_dsn(None)  # the embedded server (FLEETSCOPE_DSN, if set, is honoured)
    result = await asyncio.to_thread(init_database, dsn)
    fleet = load_fleet(DEMO_SEED)
    admin_token = secrets.token_urlsafe(24)
    stop = asyncio.Event()
    async with SimServer(fleet, host=args.host, port=args.sim_port) as sim:
        def register() -> tuple[list[int], list[str]]:
            with db.connect(dsn, autocommit=True) as conn:
                ids = register_fleet(conn, fleet, sim.base_url, DEMO_OPERATOR, interval_s=args.interval)
                return ids, [rotate_node_token(conn, node_id) for node_id in ids]

        node_ids, node_tokens = await asyncio.to_thread(register)
        run_id = int(started.timestamp())
        history = None
        if args.history_days > 0:
            history = await asyncio.to_thread(_write_history, dsn, fleet, node_ids, end=datetime.now(timezone.utc),
                                              days=args.history_days, interval_s=args.interval, run_id=run_id)
        # The demo checks integrity every minute and publishes every 10 minutes,
        # so its findings and bundles show up while someone is looking.
        settings = CollectorSettings(dsn=dsn, host=args.host, port=args.collector_port, admin_token=admin_token,
                                     integrity_interval_s=60, publish_interval_s=600,
                                     allow_private_targets=True,  # its simulated fleet is on 127.0.0.1
                                     proof_interval_s=PROOF_INTERVAL_S, proof_share=PROOF_SHARE,
                                     proof_scale=PROOF_SCALE)
        if history is not None:
            # The integrity checks and a first publication before anything
            # serves, not at the maintenance loop's first round: the first page
            # has its findings, the fleet jump and a bundle to download.
            await asyncio.to_thread(_first_publication, dsn, settings)
        collector = asyncio.create_task(run_collector(settings, stop=stop, handle_signals=False), name="collector")
        shutdown = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(sig, shutdown.set)
        waiting = asyncio.create_task(shutdown.wait())
        base = f"http://{args.host}:{args.collector_port}"
        dashboard: subprocess.Popen | None = None
        market: asyncio.Task | None = None
        provers: list = []
        try:
            await _wait_until_up(f"{base}/healthz", collector)
            provers = start_provers(fleet, base, node_tokens, node_ids=node_ids)
            # Before the dashboard computes its first snapshot: ending them changes the past.
            await _end_stale_jobs(dsn, base, admin_token, cutoff=started, current=f"demo-{run_id}-")
            dashboard = await _start_dashboard(dsn, args.host, args.dashboard_port, collector_url=base)
            explorer_url = f"http://{args.host}:{args.dashboard_port}/"
            print(f"""
fleetscope demo is running ({result.mode} mode, database {db.describe_dsn(dsn)})
  simulated fleet: {len(fleet)} hosts on {sim.base_url}/metrics/{{0..{len(fleet) - 1}}}, scraped every {args.interval} s,
                   proving their GPUs when a proof-of-GPU round (every ~{PROOF_INTERVAL_S:.0f} s) asks
  explorer:        {explorer_url}  (pages /, /nodes, /integrity, /methodology, /operator; JSON /api/v1/fleet)
  collector:       {base}  (/metrics, /healthz, /api/v1/...)
  fleet snapshot:  fleetscope snapshot     (the same numbers as the collector's /metrics)
  history:         {_history_line(history, args.history_days)}
Press Ctrl-C to stop.""", flush=True)
            market = asyncio.create_task(
                _marketplace(base, admin_token, fleet, node_ids, first_round_s=args.interval + 2, run_id=run_id,
                             running=history.running if history is not None else None), name="marketplace")
            await asyncio.wait({collector, waiting}, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Whatever ended the demo (a failure while starting included):
            # the marketplace first, while the collector still takes its
            # last posts (it ends its running jobs), then the rest; the
            # dashboard's process never outlives the demo.
            if market is not None:
                market.cancel()
                await asyncio.gather(market, return_exceptions=True)
            stop_provers(provers)
            stop.set()
            if dashboard is not None:
                dashboard.terminate()
                await asyncio.to_thread(dashboard.wait)
            waiting.cancel()
            await asyncio.gather(collector, waiting, return_exceptions=True)
        if collector.done() and not collector.cancelled() and collector.exception() is not None:
            raise collector.exception()
    return 0


async def _start_dashboard(dsn: str, host: str, port: int, *, collector_url: str) -> subprocess.Popen:
    """``fleetscope dashboard`` (gunicorn) in a child process, once it answers."""
    # The DSN (with the embedded server's password) goes in the environment,
    # never on a command line every local user can read in ps.
    # /operator's changes go to this demo's collector (issue 16).
    proc = subprocess.Popen([sys.executable, "-m", "fleetscope.cli", "dashboard", "--host", host,
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            env={**os.environ, "FLEETSCOPE_DSN": dsn, "FLEETSCOPE_COLLECTOR_URL": collector_url})
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError(f"the dashboard exited with status {proc.returncode} (is port {port} free? "
                                       "--dashboard-port chooses another)")
                try:
                    async with session.get(f"http://{host}:{port}/api/v1/fleet") as response:
                        if response.status == 200:
                            return proc
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the dashboard did not come up on {host}:{port}")
    except BaseException:  # (cancelled included): the child must not outlive a failed start
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        raise


async def _wait_until_up(url: str, collector: asyncio.Task) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if collector.done():
                collector.result()  # raises the collector's own error
                return
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the collector did not come up at {url}")


STALE_JOBS_SQL = """
SELECT j.job_id, j.node_id, j.gpu_count, j.price_per_gpu_hour, j.started_at,
       greatest(j.started_at, least(
           (SELECT max(o.time) FROM observations o WHERE o.node_id = j.node_id AND o.ok AND o.time < %(cutoff)s),
           (SELECT min(k.started_at) FROM jobs k WHERE k.node_id = j.node_id AND k.started_at > j.started_at)))
       AS seen
  FROM jobs j
 WHERE j.status = 'running' AND j.job_id LIKE 'demo-%%' AND j.started_at < %(cutoff)s
   AND NOT starts_with(j.job_id, %(current)s)
"""


async def _end_stale_jobs(dsn: str, base: str, admin_token: str, *, cutoff: datetime, current: str) -> None:
    """End the jobs an earlier demo on this database left running (it was killed, not stopped).

    Each ends at its node's last successful observation before this demo
    started (``cutoff``), or when a later demo hired the node again, if that
    came first: the hours after it, when nobody watched the node or another
    job had it, were never sold. This demo's own jobs (ids starting with
    ``current``: those its simulated history left running) are kept.
    """
    def stale() -> list[tuple]:
        with db.connect(dsn, autocommit=True) as conn:
            return conn.execute(STALE_JOBS_SQL, {"cutoff": cutoff, "current": current}).fetchall()

    rows = await asyncio.to_thread(stale)
    if not rows:
        return
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin_token}"}) as session:
        for job_id, node_id, gpu_count, price, started_at, seen in rows:
            await _post(session, f"{base}/api/v1/jobs", {
                "job_id": job_id, "node_id": node_id, "gpu_count": gpu_count, "price_per_gpu_hour": str(price),
                "started_at": started_at.isoformat(), "ended_at": (seen or started_at).isoformat(),
                "status": "succeeded"})
    log.warning("ended %d jobs an earlier demo left running", len(rows))


async def _marketplace(base: str, admin_token: str, fleet, node_ids: list[int], *, first_round_s: float,
                       run_id: int, running: list[dict] | None = None) -> None:
    """Hire the hired hosts once they have been seen, then end one job and start another every tick.

    With ``running`` (the jobs the simulated history left running), carry
    those on at once. Otherwise no back-filled jobs: a job before fleetscope
    observed its node would be hired hours the node was never seen online,
    which the snapshot's hired-vs-online check rightly flags.
    """
    rng = random.Random(DEMO_SEED)
    if running is not None:
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            await _rotate_until_stopped(session, base, list(running), rng)
        return
    await asyncio.sleep(first_round_s)
    now = datetime.now(timezone.utc)
    running = [{"job_id": f"demo-{run_id}-{n}", "node_id": node_ids[i], "gpu_count": host.n_gpus,
                "price_per_gpu_hour": str(PRICES.get(host.model or "", DEFAULT_PRICE)),
                "started_at": now.isoformat(), "ended_at": None, "status": "running"}
               for n, (i, host) in enumerate((i, h) for i, h in enumerate(fleet.hosts) if h.hired)]
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for job in running:
            await _post(session, f"{base}/api/v1/jobs", job)
        await _rotate_until_stopped(session, base, running, rng)


async def _rotate_until_stopped(session: aiohttp.ClientSession, base: str, running: list[dict],
                                rng: random.Random) -> None:
    try:
        await _hire_and_rotate(session, base, running, rng)
    finally:
        # Stopped (Ctrl-C, --duration): the marketplace ends its jobs, so a
        # later demo on the same database does not find them still
        # accruing hours for nodes nobody observed in between.
        ended = datetime.now(timezone.utc).isoformat()
        await asyncio.shield(asyncio.gather(*(
            _post(session, f"{base}/api/v1/jobs", dict(job, status="succeeded", ended_at=ended))
            for job in running), return_exceptions=True))


async def _hire_and_rotate(session: aiohttp.ClientSession, base: str, running: list[dict], rng: random.Random) -> None:
    while running:
        await asyncio.sleep(MARKET_TICK_S)
        finished = running.pop(rng.randrange(len(running)))
        finished.update(status="succeeded", ended_at=datetime.now(timezone.utc).isoformat())
        await _post(session, f"{base}/api/v1/jobs", finished)
        fresh = dict(finished, job_id=f"{finished['job_id']}-r", status="running", ended_at=None,
                     started_at=datetime.now(timezone.utc).isoformat())
        await _post(session, f"{base}/api/v1/jobs", fresh)
        running.append(fresh)


def _write_history(dsn: str, fleet, node_ids: list[int], *, end: datetime, days: float, interval_s: int,
                   run_id: int):
    """The fleet's simulated past up to ``end`` (collector/sim_history.py); None when it already has one."""
    from collector.sim_history import write_history

    with db.connect(dsn, autocommit=True) as conn:
        history = write_history(conn, fleet, node_ids, end=end, days=days, interval_s=interval_s,
                                price_of=lambda host: PRICES.get(host.model or "", DEFAULT_PRICE),
                                running_job_id=lambda n: f"demo-{run_id}-{n}")
    if history is not None:
        log.info("wrote %.1f days of simulated history in %.1f s: %d observations, %d GPU samples, %d jobs",
                 days, history.seconds, history.observations, history.samples, history.jobs)
    return history


def _history_line(history, days: float) -> str:
    if history is None:
        return ("none written: this database's demo fleet has a past of its own" if days > 0
                else "none (--history-days 0)")
    return (f"{days:g} days of SIMULATED history written in {history.seconds:.1f} s ({history.observations:,} "
            "observations, labelled as simulated on every page that shows it)")


def _first_publication(dsn: str, settings: CollectorSettings) -> None:
    """The integrity checks and the due publication, as the maintenance loop's round does them."""
    from collector.maintenance import run_once
    from fleetscope.integrity import IntegritySettings

    run_once(dsn, checks=IntegritySettings.from_env(), bundle_dir=settings.bundle_dir,
             publish_period=timedelta(seconds=settings.publish_interval_s))


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> None:
    async with session.post(url, json=body) as response:
        if response.status >= 400:
            log.warning("marketplace: %s answered %d: %s", url, response.status, await response.text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetscope demo")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return asyncio.run(run(args))
