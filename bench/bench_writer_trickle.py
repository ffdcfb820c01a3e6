"""Benchmark: the writer's CPU per batch at a steady trickle, two checkouts alternating.

bench_writer.py times a burst (the queue always full, groups of 2,000
batches); a running collector instead commits a few hundred batches a second,
and a group is written every FLUSH_INTERVAL_S per writer, so a group's fixed
cost (its round trips, its thread hand-off) counts. This commits RATE batches
a second for SECONDS through each version's writer (its own default
connections) and reports the CPU of this process (all its threads: the event
loop and the writing threads) per batch, from getrusage.

    git worktree add /tmp/writer-before <commit>
    python bench/bench_writer_trickle.py /tmp/writer-before .
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_writer as bw  # noqa: E402
import bench_writer_ab as ab  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def cpu_per_batch(writer_class, dsn: str, mode: str, batches: list, rate: int) -> float:
    """Microseconds of this process's CPU per batch, committing ``rate`` batches a second."""
    with tempfile.TemporaryDirectory() as spool:
        async with writer_class(dsn, spool_dir=Path(spool), collector_id="trickle", mode=mode) as writer:
            await asyncio.sleep(1)  # connected, first heartbeat written
            c0, t0 = cpu_s(), time.monotonic()
            for i, b in enumerate(batches):
                appender = writer.appender()
                appender.append(b)
                await appender.commit()
                if i % 50 == 49:  # bursts of 50, as scrapes finish together
                    await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
            await asyncio.sleep(0.5)  # the last groups written
            c1 = cpu_s()
    return (c1 - c0) / len(batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="version A: a checkout's root")
    parser.add_argument("b", help="version B: a checkout's root")
    parser.add_argument("--dsn")
    parser.add_argument("--rate", type=int, default=500, help="batches a second")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    versions = {"A": ab.load_writer(args.a), "B": ab.load_writer(args.b)}
    dsn, mode, _, payloads = bw.bench_fleet(args.dsn, 1000)
    origin = datetime.now(timezone.utc) + timedelta(minutes=1)
    got: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for k, name in enumerate(["A", "B"] if r % 2 == 0 else ["B", "A"]):
            batches = bw.make_batches(payloads, args.rate * args.seconds, origin + timedelta(hours=r, minutes=20 * k))
            got[name].append(asyncio.run(cpu_per_batch(versions[name].Writer, dsn, mode, batches, args.rate)))
        print(f"round {r + 1}: A {got['A'][-1]:.0f} us, B {got['B'][-1]:.0f} us CPU per batch", flush=True)
    print(f"median: A {statistics.median(got['A']):.0f} us, B {statistics.median(got['B']):.0f} us CPU per batch "
          f"at {args.rate} batches/s ({mode})")


if __name__ == "__main__":
    main()
