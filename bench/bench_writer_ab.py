"""Benchmark: two versions of the writer against each other, on the same database, alternating.

For a change to the writer: the machine is noisy (a writer's rate moves
+-15 % between rounds), so a before/after comparison is only worth something
taken in one run, round by round. Each version is a checkout (a git worktree)
whose ``collector`` package is imported on its own; each round times version
A and version B (which goes first alternates) on fresh batches with this
checkout's bench_writer.py harness, and the median of the per-round ratios
B / A is reported.

    git worktree add /tmp/writer-before <commit>
    python bench/bench_writer_ab.py /tmp/writer-before .              # embedded, plain mode
    python bench/bench_writer_ab.py /tmp/writer-before . --dsn DSN    # e.g. TimescaleDB
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_writer as bw  # noqa: E402



def load_writer(root: str) -> ModuleType:
    """``collector.writer`` of the checkout at ``root``, with the rest of its ``collector`` package."""
    for name in [m for m in sys.modules if m == "collector" or m.startswith("collector.")]:
        del sys.modules[name]
    sys.path.insert(0, str(Path(root).resolve()))
    try:
        return importlib.import_module("collector.writer")
    finally:
        sys.path.pop(0)
        for name in [m for m in sys.modules if m == "collector" or m.startswith("collector.")]:
            del sys.modules[name]  # (the next version imports its own; this one keeps its references)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="version A: a checkout's root")
    parser.add_argument("b", help="version B: a checkout's root")
    parser.add_argument("--dsn")
    parser.add_argument("--batches", type=int, default=25_000, help="batches per run (x 8 rows)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--connections", type=int, help="both writers' connections (default: each its own default)")
    args = parser.parse_args()
    versions = {"A": load_writer(args.a), "B": load_writer(args.b)}

    dsn, mode, version, payloads = bw.bench_fleet(args.dsn, 1000)
    origin = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=1)
    rates: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds + 1):  # round 0 warms both and is not counted
        order = ["A", "B"] if r % 2 else ["B", "A"]
        for k, name in enumerate(order):
            batches = bw.make_batches(payloads, args.batches, origin + timedelta(hours=r, minutes=20 * k))
            bw.checkpoint(dsn)
            bw.Writer = versions[name].Writer  # through_writer writes with bench_writer's Writer
            with tempfile.TemporaryDirectory() as spool:
                # (Each with its own defaults: a writer that lowered the switch interval still does.)
                connections = args.connections or versions[name].WRITE_CONNECTIONS
                rate = asyncio.run(bw.through_writer(dsn, batches, Path(spool), mode, connections))
            if r:
                rates[name].append(rate)
        if r:
            a, b = rates["A"][-1], rates["B"][-1]
            print(f"round {r}: A {a:,.0f} rows/s, B {b:,.0f} rows/s, B/A {b / a:.2f}")
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ratios = [b / a for a, b in zip(rates["A"], rates["B"])]
    print(json.dumps({
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {mem_gb:.0f} GiB, Python {platform.python_version()}",
        "postgres": version, "mode": mode, "rows_per_run": 8 * args.batches, "rounds": args.rounds,
        "a": args.a, "b": args.b,
        "a_rows_per_s": round(statistics.median(rates["A"])), "b_rows_per_s": round(statistics.median(rates["B"])),
        "ratio_b_over_a_median": round(statistics.median(ratios), 3),
        "ratios": [round(x, 2) for x in ratios],
    }, indent=2))


if __name__ == "__main__":
    main()
