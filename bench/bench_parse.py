"""CPU-seconds per 1,000 payloads: reference parser, fast path cold, fast path warm.

Run: python bench/bench_parse.py [--runs 7]; the figures go in
docs/benchmarks-parse.md. CPU time comes from time.process_time() around a
bounded loop (BENCH.md: CPU per unit of work, medians of several runs, all
paths measured in the same process and minute). The warm path gets a
different rendering of the payload each time (values moved, as between real
scrapes), so no string or float is reused from the previous iteration.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import prometheus_client

from collector.parse import PayloadParser, SeriesCache

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ROOT / "tests" / "fixtures" / "payloads"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
CASES = [
    ("dcgm-exporter, 12 fields x 8 A100 (the 96-sample shape)", "dcgm_exporter_12fields_a100x8.prom", None),
    ("dcgm-exporter default-counters.csv x 8 A100", "dcgm_exporter_default_a100x8.prom", None),
    ("dcgm-exporter dcp-metrics-included.csv x 8 A100", "dcgm_exporter_dcp_a100x8.prom", None),
    ("fleetscope exporter x 8 RTX 4090, text", "fleet_exporter_rtx4090x8.prom", None),
    ("fleetscope exporter x 8 RTX 4090, OpenMetrics", "fleet_exporter_rtx4090x8.openmetrics", OPENMETRICS),
    ("nvidia_gpu_exporter x 8 RTX 3090", "nvidia_gpu_exporter_rtx3090x8.prom", None),
]
# Loop sizes: bounded so one run stays within seconds on a 2-core machine.
WARM_LOOPS = 2000
COLD_LOOPS = 100
REFERENCE_LOOPS = 20


def variants(text: str, count: int, seed: int = 7) -> list[bytes]:
    """`count` renderings of `text` with about half the sample values changed."""
    rnd = random.Random(seed)
    lines = text.split("\n")
    out = []
    for _ in range(count):
        new = []
        for line in lines:
            # Info samples stay 1: OpenMetrics refuses any other value.
            if line and line[0] != "#" and "_info{" not in line and rnd.random() < 0.5:
                head, _, value = line.rpartition(" ")
                if value.isdigit():
                    value = str(int(value) + rnd.randint(0, 9))
                elif value.replace(".", "", 1).isdigit():
                    value = f"{float(value) * rnd.uniform(0.9, 1.0):.3f}"
                line = f"{head} {value}"
            new.append(line)
        out.append("\n".join(new).encode())
    return out


def cpu_per_1000(fn, bodies: list[bytes], loops: int) -> float:
    n = len(bodies)
    start = time.process_time()
    for i in range(loops):
        fn(bodies[i % n])
    return (time.process_time() - start) / loops * 1000


def bench(path: Path, content_type: str | None, runs: int) -> dict[str, float]:
    parser = PayloadParser()
    bodies = variants(path.read_text(), 64)
    cache = SeriesCache()
    parser.parse(bodies[0], content_type=content_type, cache=cache)

    def warm(body: bytes) -> None:
        parser.parse(body, content_type=content_type, cache=cache)

    def cold(body: bytes) -> None:
        parser.parse(body, content_type=content_type, cache=SeriesCache())

    def reference(body: bytes) -> None:
        parser.parse_reference(body, content_type=content_type)

    assert parser.parse(bodies[1], content_type=content_type, cache=cache).path == "warm"
    results: dict[str, list[float]] = {"reference": [], "cold": [], "warm": []}
    for _ in range(runs):
        results["reference"].append(cpu_per_1000(reference, bodies, REFERENCE_LOOPS))
        results["cold"].append(cpu_per_1000(cold, bodies, COLD_LOOPS))
        results["warm"].append(cpu_per_1000(warm, bodies, WARM_LOOPS))
    return {name: statistics.median(values) for name, values in results.items()}


def machine() -> str:
    free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.strip()
    return (f"nproc {os.cpu_count()}, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, prometheus_client "
            f"{prometheus_client.__version__ if hasattr(prometheus_client, '__version__') else _dist_version()}"
            f"\n{free}")


def _dist_version() -> str:
    from importlib.metadata import version

    return version("prometheus_client")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per figure; the median is shown")
    args = ap.parse_args()
    print(machine(), file=sys.stderr)
    print("| payload | samples | KiB | reference | fast, cold cache | fast, warm cache | warm speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, name, content_type in CASES:
        path = PAYLOADS / name
        series = PayloadParser().parse(path.read_bytes(), content_type=content_type).series
        r = bench(path, content_type, args.runs)
        print(f"| {label} | {series} | {path.stat().st_size / 1024:.1f} | "
              f"{r['reference']:.2f} | {r['cold']:.3f} | {r['warm']:.3f} | "
              f"{r['reference'] / r['warm']:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
