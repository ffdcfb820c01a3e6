"""CPU-seconds per 1,000 payloads: reference parser, fast path cold, fast path warm.

Run: python bench/bench_parse.py [--runs 7]; the figures go in
docs/benchmarks-parse.md. CPU time comes from time.process_time() around a
bounded loop (BENCH.md: CPU per unit of work, medians of several runs, all
paths measured in the same process and minute). The warm path gets a
different rendering of the payload each time (values moved, as between real
scrapes), so no string or float is reused from the previous iteration.

`--baseline REV` also measures the parser as it was at git revision REV
(its collector/parse.py and collector/metricnames.py, loaded as a separate
package), interleaved with the current one in the same runs. `--memory N`
measures instead the bytes a warm `SeriesCache` keeps per target
(tracemalloc, over N distinct simulated or fixture-derived 8-GPU hosts).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import ModuleType

import prometheus_client

from collector import parse as current

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


def load_baseline(rev: str) -> ModuleType:
    """collector.parse as of git revision `rev`, with its own metricnames."""
    root = Path(tempfile.mkdtemp(prefix="bench_parse_"))
    package = root / "baseline_collector"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("parse.py", "metricnames.py"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:collector/{name}"],
                              capture_output=True, text=True, check=True).stdout
        text = text.replace("from collector import metricnames", "from baseline_collector import metricnames")
        (package / name).write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module("baseline_collector.parse")


def path_timers(module: ModuleType, bodies: list[bytes], content_type: str | None) -> dict:
    """The reference, cold and warm parse of one module, as one-argument calls."""
    parser = module.PayloadParser()
    cache = module.SeriesCache()
    parser.parse(bodies[0], content_type=content_type, cache=cache)
    assert parser.parse(bodies[1], content_type=content_type, cache=cache).path == "warm"
    return {
        "reference": lambda body: parser.parse_reference(body, content_type=content_type),
        "cold": lambda body: parser.parse(body, content_type=content_type, cache=module.SeriesCache()),
        "warm": lambda body: parser.parse(body, content_type=content_type, cache=cache),
    }


def bench(path: Path, content_type: str | None, runs: int,
          baseline: ModuleType | None = None, *, warm_only: bool = False) -> dict[str, float]:
    """Medians of `runs`; with a baseline, its cold and warm figures are interleaved."""
    bodies = variants(path.read_text(), 64)
    now = path_timers(current, bodies, content_type)
    before = path_timers(baseline, bodies, content_type) if baseline else None
    results: dict[str, list[float]] = {}
    paths = (("warm", WARM_LOOPS),) if warm_only else (("cold", COLD_LOOPS), ("warm", WARM_LOOPS))
    for _ in range(runs):
        loops = [] if warm_only else [("reference", now["reference"], REFERENCE_LOOPS)]
        for path_name, n in paths:
            if before is not None:
                loops.append((f"{path_name} before", before[path_name], n))
            loops.append((path_name, now[path_name], n))
        for name, fn, n in loops:
            results.setdefault(name, []).append(cpu_per_1000(fn, bodies, n))
    return {name: statistics.median(values) for name, values in results.items()}


# --memory: distinct 8-GPU hosts.
_UUID = re.compile(r"\b(GPU-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_HOSTNAME = re.compile(r'(Hostname="|hostname=")[^"]*"')


def fixture_hosts(text: str, count: int) -> list[tuple[bytes, bytes]]:
    """`count` hosts from one recorded payload: its UUIDs and host name replaced.

    Each host gives two renderings with different values (cold, then warm).
    """
    one, two = variants(text, 2, seed=11)
    hosts = []
    for i in range(count):
        def fresh(m: re.Match, i: int = i) -> str:
            h = hashlib.blake2b(f"{i}/{m.group(0)}".encode(), digest_size=16).hexdigest()
            return (m.group(1) or "") + f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

        def rename(body: bytes) -> bytes:
            text = _UUID.sub(fresh, body.decode())
            return _HOSTNAME.sub(lambda m: f'{m.group(1)}node-{i:05d}"', text).encode()

        hosts.append((rename(one), rename(two)))
    return hosts


def sim_hosts(count: int) -> list[tuple[bytes, bytes]]:
    """`count` simulated healthy 8-GPU hosts (exporters.sim), two scrapes each."""
    from exporters.sim import SimFleet

    fleet = SimFleet.from_scenario(11, [{"profile": "healthy", "count": count, "gpus": 8}])
    t = 1_800_000_000.0
    return [(fleet.render(i, t), fleet.render(i, t + 15)) for i in range(count)]


def retained(module: ModuleType, hosts: list[tuple[bytes, bytes]],
             content_type: str | None) -> tuple[float, float]:
    """(bytes per warm cache, bytes the first cache kept): tracemalloc, after gc."""
    parser = module.PayloadParser()
    caches = []
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        first = 0
        for one, two in hosts:
            cache = module.SeriesCache()
            parser.parse(one, content_type=content_type, cache=cache)
            assert parser.parse(two, content_type=content_type, cache=cache).path == "warm"
            caches.append(cache)
            if not first:
                gc.collect()
                first = tracemalloc.get_traced_memory()[0] - base
        gc.collect()
        total = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return total / len(caches), first


def memory(count: int, baseline: ModuleType | None) -> None:
    print(f"| {count} distinct 8-GPU hosts | KiB | before: per cache | after: per cache "
          f"| after: first cache | after x 30,000 targets |")
    print("|---|---:|---:|---:|---:|---:|")
    sets = [("simulated fleet exporter (exporters.sim, healthy)", sim_hosts(count), None)]
    for label, name, content_type in CASES:
        if "dcgm" in name:
            sets.append((label + ", UUIDs and host name replaced",
                         fixture_hosts((PAYLOADS / name).read_text(), count), content_type))
    for label, hosts, content_type in sets:
        before = f"{retained(baseline, hosts, content_type)[0]:,.0f}" if baseline else "-"
        per, first = retained(current, hosts, content_type)
        print(f"| {label} | {len(hosts[0][0]) / 1024:.1f} | {before} | {per:,.0f} | "
              f"{first:,.0f} | {per * 30000 / 1e6:,.0f} MB |", flush=True)


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
    ap.add_argument("--baseline", metavar="REV",
                    help="also measure the parser of this git revision, interleaved")
    ap.add_argument("--warm-only", action="store_true",
                    help="with --baseline: only the warm path, before and after")
    ap.add_argument("--memory", type=int, metavar="N",
                    help="measure bytes per warm cache over N hosts instead of CPU")
    args = ap.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None
    print(machine(), file=sys.stderr)
    if args.memory:
        memory(args.memory, baseline)
        return
    if args.warm_only:
        if baseline is None:
            ap.error("--warm-only needs --baseline")
        print(f"| payload | warm, {args.baseline} | warm | now / {args.baseline} |")
        print("|---|---:|---:|---:|")
        for label, name, content_type in CASES:
            r = bench(PAYLOADS / name, content_type, args.runs, baseline, warm_only=True)
            print(f"| {label} | {r['warm before']:.3f} | {r['warm']:.3f} | "
                  f"{r['warm'] / r['warm before']:.2f} |", flush=True)
        return
    if baseline is None:
        print("| payload | samples | KiB | reference | fast, cold cache | fast, warm cache | warm speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|")
    else:
        print(f"| payload | samples | KiB | reference | cold, {args.baseline} | cold | "
              f"warm, {args.baseline} | warm | warm, now / {args.baseline} |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, name, content_type in CASES:
        path = PAYLOADS / name
        series = current.PayloadParser().parse(path.read_bytes(), content_type=content_type).series
        r = bench(path, content_type, args.runs, baseline)
        head = f"| {label} | {series} | {path.stat().st_size / 1024:.1f} | {r['reference']:.2f} | "
        if baseline is None:
            print(f"{head}{r['cold']:.3f} | {r['warm']:.3f} | "
                  f"{r['reference'] / r['warm']:.0f}x |", flush=True)
        else:
            print(f"{head}{r['cold before']:.3f} | {r['cold']:.3f} | {r['warm before']:.3f} | "
                  f"{r['warm']:.3f} | {r['warm'] / r['warm before']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
