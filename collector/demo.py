"""``fleetscope demo``: everything, on the embedded database, with one command.

Starts (or reuses) the embedded PostgreSQL server and its schema, serves the
simulated demo fleet (collector/simulate.py, DEMO_SCENARIO) and registers its
hosts as scrape targets, runs the collector with its scraper, writer and
maintenance loop, and plays a small marketplace that posts jobs for the hired
hosts through the collector's own ``POST /api/v1/jobs`` — the same path the
real marketplace uses — so GPU-hours and revenue move. Prints the URLs and
runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import secrets
import sys
from datetime import datetime, timezone
from decimal import Decimal

import aiohttp

from collector.app import run as run_collector
from collector.settings import CollectorSettings
from collector.simulate import SimServer, load_fleet, register_fleet
from fleetscope import db
from fleetscope.migrate import init_database

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address of every demo server")
    parser.add_argument("--collector-port", type=int, default=9300)
    parser.add_argument("--sim-port", type=int, default=9400, help="the simulated hosts' /metrics")
    parser.add_argument("--interval", type=int, default=15, help="the nodes' interval, s")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")


async def run(args: argparse.Namespace) -> int:
    dsn = db.resolve_dsn(None)  # the embedded server (FLEETSCOPE_DSN, if set, is honoured)
    result = await asyncio.to_thread(init_database, dsn)
    fleet = load_fleet(DEMO_SEED)
    admin_token = secrets.token_urlsafe(24)
    stop = asyncio.Event()
    async with SimServer(fleet, host=args.host, port=args.sim_port) as sim:
        def register() -> list[int]:
            with db.connect(dsn, autocommit=True) as conn:
                return register_fleet(conn, fleet, sim.base_url, DEMO_OPERATOR, interval_s=args.interval)

        node_ids = await asyncio.to_thread(register)
        # The demo checks integrity every minute and publishes every 10 minutes,
        # so its findings and bundles show up while someone is looking.
        settings = CollectorSettings(dsn=dsn, host=args.host, port=args.collector_port, admin_token=admin_token,
                                     integrity_interval_s=60, publish_interval_s=600)
        collector = asyncio.create_task(run_collector(settings, stop=stop), name="collector")
        base = f"http://{args.host}:{args.collector_port}"
        await _wait_until_up(f"{base}/healthz", collector)
        print(f"""
fleetscope demo is running ({result.mode} mode, database {db.describe_dsn(dsn)})
  simulated fleet: {len(fleet)} hosts on {sim.base_url}/metrics/{{0..{len(fleet) - 1}}}, scraped every {args.interval} s
  collector:       {base}  (/metrics, /healthz, /api/v1/...)
  fleet snapshot:  fleetscope snapshot     (the same numbers as the collector's /metrics)
Press Ctrl-C to stop.""", flush=True)
        market = asyncio.create_task(_marketplace(base, admin_token, fleet, node_ids, first_round_s=args.interval + 2),
                                     name="marketplace")
        try:
            if args.duration is None:
                await collector
            else:
                done, _ = await asyncio.wait({collector}, timeout=args.duration)
                if not done:
                    stop.set()
                    await collector
        finally:
            stop.set()
            market.cancel()
            await asyncio.gather(market, collector, return_exceptions=True)
    return 0


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


async def _marketplace(base: str, admin_token: str, fleet, node_ids: list[int], *, first_round_s: float) -> None:
    """Hire the hired hosts once they have been seen, then end one job and start another every tick.

    No back-filled history: a job before fleetscope observed its node would
    be hired hours the node was never seen online, which the snapshot's
    hired-vs-online check rightly flags.
    """
    rng = random.Random(DEMO_SEED)
    await asyncio.sleep(first_round_s)
    now = datetime.now(timezone.utc)
    run_id = int(now.timestamp())
    running = [{"job_id": f"demo-{run_id}-{n}", "node_id": node_ids[i], "gpu_count": host.n_gpus,
                "price_per_gpu_hour": str(PRICES.get(host.model or "", DEFAULT_PRICE)),
                "started_at": now.isoformat(), "ended_at": None, "status": "running"}
               for n, (i, host) in enumerate((i, h) for i, h in enumerate(fleet.hosts) if h.hired)]
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for job in running:
            await _post(session, f"{base}/api/v1/jobs", job)
        while running:
            await asyncio.sleep(MARKET_TICK_S)
            finished = running.pop(rng.randrange(len(running)))
            finished.update(status="succeeded", ended_at=datetime.now(timezone.utc).isoformat())
            await _post(session, f"{base}/api/v1/jobs", finished)
            fresh = dict(finished, job_id=f"{finished['job_id']}-r", status="running", ended_at=None,
                         started_at=datetime.now(timezone.utc).isoformat())
            await _post(session, f"{base}/api/v1/jobs", fresh)
            running.append(fresh)


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
