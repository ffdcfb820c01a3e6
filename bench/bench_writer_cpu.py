"""Where the writer's time goes: CPU per row (this process vs the rest of the machine) and connection busy time.

A diagnostic beside bench/bench_writer.py, on the same data and harness: the
writer is run on fresh batches a few times, and over each timed window it
records

- the CPU seconds of this Python process (the simulated push receiver, the
  writer's event-loop work and its writing threads) and of everything else on
  the machine (/proc/stat less this process: on an otherwise idle machine,
  the database backends), each per GPU sample row;
- for each group written (``collector.group.write_group``, wrapped), its start,
  end and rows, from which the fraction of the window the writer's connections
  spent inside a transaction.

Also the same CPU split for the bare COPY baseline of bench_writer.py.

    python bench/bench_writer_cpu.py                 # embedded server, plain mode
    python bench/bench_writer_cpu.py --dsn DSN       # another server (TimescaleDB)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_writer as bw  # noqa: E402

from collector import bucket_writer  # noqa: E402
from collector import writer as writer_module  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent (user, nice, system, irq, softirq)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:3]) + fields[5] + fields[6]) / HZ


class Probe:
    """CPU split between this process and the rest of the machine over a window."""

    def start(self) -> None:
        self.t0, self.own0, self.all0 = time.perf_counter(), time.process_time(), machine_cpu_s()

    def stop(self) -> None:
        self.t1, self.own1, self.all1 = time.perf_counter(), time.process_time(), machine_cpu_s()

    def per_row_us(self, rows: int) -> tuple[float, float]:
        own = self.own1 - self.own0
        return own / rows * 1e6, ((self.all1 - self.all0) - own) / rows * 1e6


PARTS: list[tuple[float, float, int]] = []
_write_group = bucket_writer.write_group


def timed_write_group(conn, group, **options):
    started = time.perf_counter()
    try:
        return _write_group(conn, group, **options)
    finally:
        PARTS.append((started, time.perf_counter(), group.sample_count))


async def run_writer(dsn: str, batches: list, mode: str, connections: int, probe: Probe) -> float:
    """bench_writer.through_writer, with the probe started and stopped around its timed window."""
    real_perf_counter = bw.time.perf_counter
    calls = 0

    def perf_counter() -> float:  # through_writer reads it exactly twice: start and end of the window
        nonlocal calls
        calls += 1
        (probe.start if calls == 1 else probe.stop)()
        return real_perf_counter()

    bw.time = type("T", (), {"perf_counter": staticmethod(perf_counter)})
    try:
        with tempfile.TemporaryDirectory() as spool:
            return await bw.through_writer(dsn, batches, Path(spool), mode, connections)
    finally:
        bw.time = time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--batches", type=int, default=50_000, help="batches per run (x 8 rows)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=writer_module.WRITE_CONNECTIONS)
    args = parser.parse_args()
    bucket_writer.write_group = timed_write_group

    dsn, mode, _, payloads = bw.bench_fleet(args.dsn, 1000)
    rows = 8 * args.batches
    print(f"{os.cpu_count()} cores; mode {mode}; {rows:,} GPU sample rows per run; "
          f"{args.connections} writer connections")
    for run in range(args.runs):
        start = datetime.now(timezone.utc) + timedelta(hours=run)
        bw.checkpoint(dsn)
        PARTS.clear()
        probe = Probe()
        rate = asyncio.run(run_writer(dsn, bw.make_batches(payloads, args.batches, start), mode,
                                      args.connections, probe))
        own, rest = probe.per_row_us(rows)
        window = probe.t1 - probe.t0
        big = [p for p in PARTS if probe.t0 <= p[0] < probe.t1 and p[2]]  # (not the heartbeats')
        busy = sum(min(e, probe.t1) - s for s, e, _ in big) / (window * args.connections)
        print(f"writer: {rate:,.0f} rows/s; CPU per row: this process {own:.2f} us, the rest {rest:.2f} us "
              f"({(own + rest) * rate / 1e6:.2f} cores in use); {len(big)} groups, median "
              f"{statistics.median(n for *_, n in big):,.0f} rows, "
              f"{statistics.median((e - s) * 1e3 for s, e, _ in big):.0f} ms; connections in a transaction "
              f"{busy:.0%} of the window")

        later = bw.make_batches(payloads, args.batches, start + timedelta(minutes=30))
        bw.checkpoint(dsn)
        probe.start()
        t_samples, t_obs = bw.baseline(dsn, later)
        probe.stop()
        own, rest = probe.per_row_us(rows)
        print(f"bare COPY (sample and observation rows, rows built inside the window): "
              f"{rows / (t_samples + t_obs):,.0f} sample rows/s; CPU per row: this process {own:.2f} us, "
              f"the rest {rest:.2f} us")


if __name__ == "__main__":
    main()
