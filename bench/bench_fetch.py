"""Benchmark: CPU per fetch, collector/fetch.py against aiohttp's client, same payloads, same process.

The simulator (``python -m exporters.simfleet --ring 2``) serves N 8-GPU hosts
from its own process (its CPU is not counted). This process fetches every
host's /metrics (gzip'd, ~28 KB inflated) N at a time, alternating the two
clients round by round, and reads its own CPU (``getrusage``: user + system,
so the kernel's loopback work is in) around each round. Both paths read the
body the way the scraper does (``collector.scrape._read_body`` for aiohttp,
``fetch.Pool.get`` for ours), inflate it, and keep connections alive.

    python bench/bench_fetch.py            # 200 hosts, 5 rounds of 10 x 200 fetches per client
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from collector import fetch  # noqa: E402
from collector.scrape import ACCEPT, ACCEPT_ENCODING, _read_body  # noqa: E402

HEADERS = {"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING, "User-Agent": "bench"}
MAX_BYTES = 4 << 20


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def with_aiohttp(session: aiohttp.ClientSession, urls: list[str], repeats: int) -> int:
    async def one(url: str) -> int:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return len(await _read_body(resp, MAX_BYTES))

    size = 0
    for _ in range(repeats):
        size = sum(await asyncio.gather(*(one(u) for u in urls)))
    return size


async def with_fetch(pool: fetch.Pool, requests: list[fetch.Request], repeats: int) -> int:
    async def one(request: fetch.Request) -> int:
        async with asyncio.timeout(10):
            return len((await pool.get(request, max_bytes=MAX_BYTES)).body)

    size = 0
    for _ in range(repeats):
        size = sum(await asyncio.gather(*(one(r) for r in requests)))
    return size


async def measure(port: int, args: argparse.Namespace) -> dict[str, list[float]]:
    urls = [f"http://127.0.0.1:{port}/metrics/{i}" for i in range(args.hosts)]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=30),
                                    headers=HEADERS, cookie_jar=aiohttp.DummyCookieJar())
    pool = fetch.Pool(max_idle=4096)
    requests = [fetch.Request(u, HEADERS) for u in urls]
    try:
        sizes = {"aiohttp": await with_aiohttp(session, urls, 2), "fetch": await with_fetch(pool, requests, 2)}
        assert sizes["aiohttp"] == sizes["fetch"], sizes  # the same bodies, inflated
        out: dict[str, list[float]] = {"aiohttp": [], "fetch": []}
        for _ in range(args.rounds):
            for name, run, arg in (("aiohttp", with_aiohttp, session), ("fetch", with_fetch, pool)):
                c0 = cpu_s()
                await run(arg, urls if name == "aiohttp" else requests, args.repeats)
                out[name].append(1000 * (cpu_s() - c0) / (args.repeats * args.hosts))
        return out
    finally:
        await session.close()
        pool.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    if not (1 <= args.hosts <= 2000 and 1 <= args.rounds <= 50 and 1 <= args.repeats <= 100):
        p.error("--hosts 1..2000, --rounds 1..50, --repeats 1..100")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "scenario.json"
        scenario.write_text(json.dumps([{"profile": "healthy", "count": args.hosts, "gpus": 8,
                                         "hired_fraction": 0.5}]))
        sim = subprocess.Popen([sys.executable, "-m", "exporters.simfleet", "--scenario", str(scenario),
                                "--port", str(port), "--ring", "2"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/0", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or sim.poll() is not None:
                        raise RuntimeError("the simulator did not start") from None
                    time.sleep(0.5)
            results = asyncio.run(measure(port, args))
        finally:
            sim.terminate()
            sim.wait(timeout=30)
    for name, values in results.items():
        print(f"{name}: CPU-s per 1,000 fetches, median {statistics.median(values):.3f} "
              f"(rounds: {', '.join(f'{v:.3f}' for v in values)})")
    ratio = statistics.median(f / a for f, a in zip(results["fetch"], results["aiohttp"], strict=True))
    print(f"fetch / aiohttp, median of per-round ratios: {ratio:.2f}")


if __name__ == "__main__":
    main()
