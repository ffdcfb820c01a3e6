"""Benchmark the exporter: scrape latency, RSS and idle CPU of an 8-GPU host.

    python bench/bench_exporter.py            # ~1.5 min
    python bench/bench_exporter.py --window 30 --scrapes 100   # quicker

Each variant runs as a separate process serving /metrics with
prometheus_client's start_http_server, as ``fleetscope-exporter`` does:

- ``sim``            our collector over the simulated backend (8 x A100);
- ``nvml-fake``      our collector over NvmlSource and an in-process fake
                     NVML (tests/fixtures/exporter/fake_nvml.py), so the
                     backend's own work is measured without a GPU;
- ``nvml``           (with ``--nvml``, on a host with an NVIDIA driver) our
                     collector over NvmlSource and the real NVML: the GPUs
                     the host has, not 8, with the driver's own time in;
- ``*-gauges``       the plain prometheus_client approach for comparison:
                     a registry of Gauges that a loop sets every 15 s from the
                     same source; a scrape only renders them.

Latency: median over real HTTP of back-to-back scrapes, with the collector's
cache off (``cache_seconds=0``), so every scrape of ours reads the GPUs: the
worst case (a 15 s scrape interval never hits the 1 s cache either). Repeated
for several rounds; the median of the round medians is reported.
RSS: VmRSS from /proc/PID/status after the scrapes.
Idle CPU: utime+stime from /proc/PID/stat over a window (default 60 s) in
which each variant is scraped every 15 s; all variants run side by side.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE_VARIANTS = ("sim", "sim-gauges", "nvml-fake", "nvml-fake-gauges")
REAL_VARIANTS = ("nvml", "nvml-gauges")
VARIANTS = BASE_VARIANTS  # main() adds REAL_VARIANTS with --nvml
SCRAPE_INTERVAL_S = 15.0
GAUGE_LOOP_INTERVAL_S = 15.0
GPUS = 8


def _fake_nvml():
    path = ROOT / "tests" / "fixtures" / "exporter" / "fake_nvml.py"
    spec = importlib.util.spec_from_file_location("fleetscope_bench_fake_nvml", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- the child: one exporter variant -------------------------------------------


def _source(kind: str):
    if kind.startswith("sim"):
        from exporters.sim import HostSpec, SimFleet

        fleet = SimFleet(1, [HostSpec("bench-host", "healthy", n_gpus=GPUS, hired=True)])
        return fleet.source(0)
    from exporters.nvml import NvmlSource

    if kind.startswith("nvml-fake"):
        return NvmlSource(_fake_nvml().eight_gpus(), hostname="bench-host")
    return NvmlSource(hostname="bench-host")  # the real pynvml


def _gauge_registry(source):
    """The plain approach: Gauges set by a loop, rendered on scrape."""
    from prometheus_client import CollectorRegistry, Gauge

    from exporters import metrics

    registry = CollectorRegistry(auto_describe=False)
    gauges = {
        spec.name: Gauge(spec.name, spec.documentation, metrics.DCGM_LABELS, registry=registry)
        for spec in metrics.DCGM
    }
    info_labels = list(metrics.info_labels(source.read().gpus[0][0], "x"))
    info = Gauge("fleet_gpu_info", metrics.INFO.documentation, info_labels, registry=registry)
    ok = Gauge("fleet_exporter_last_collect_success", "ok", registry=registry)

    def loop() -> None:
        while True:
            reading = source.read()
            for identity, telemetry in reading.gpus:
                labels = metrics.dcgm_labels(identity, reading.hostname)
                info.labels(**metrics.info_labels(identity, reading.hostname)).set(1)
                for spec in metrics.DCGM:
                    value = getattr(telemetry, spec.attr)
                    if value is not None:
                        gauges[spec.name].labels(**labels).set(value)
            ok.set(1)
            time.sleep(GAUGE_LOOP_INTERVAL_S)

    threading.Thread(target=loop, daemon=True).start()
    return registry


def serve(kind: str) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    from exporters.gpu_collector import GpuCollector

    source = _source(kind)
    if kind.endswith("-gauges"):
        registry = _gauge_registry(source)
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(GpuCollector(source, cache_seconds=0))
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(server.server_port, flush=True)
    threading.Event().wait()


# -- the parent: measure -----------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _scrape(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    return time.perf_counter() - start, len(body)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:  # run from a checkout that was not pip-installed
            return "not installed (source tree)"

    return {
        "python": platform.python_version(),
        "prometheus-client": of("prometheus-client"),
        "nvidia-ml-py": of("nvidia-ml-py"),
        "fleetscope": of("fleetscope"),
    }


def _gpus() -> list[str]:
    """The real GPUs (name, driver) when --nvml measures them."""
    import pynvml

    pynvml.nvmlInit()
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        return [f"{pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))} (driver {driver})"
                for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def _machine() -> dict[str, str]:
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": str(os.cpu_count()),
        "memory_gib": f"{mem_kb / 1024 / 1024:.1f}",
        "cpu": cpu,
        "kernel": platform.release(),
    }


def _render_throughput(seconds: float = 2.0) -> tuple[float, float]:
    """SimFleet.render for 1000 8-GPU hosts: first render (builds the
    template) in ms per host, then warm renders per second."""
    from exporters.sim import HostSpec, SimFleet

    hosts = 1000
    fleet = SimFleet(1, [HostSpec(f"h{i}", n_gpus=GPUS, hired=i % 2 == 0) for i in range(hosts)])
    t = 1_795_000_000.0
    start = time.perf_counter()
    for i in range(hosts):
        fleet.render(i, t)
    first_ms = (time.perf_counter() - start) / hosts * 1000
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fleet.render(n % hosts, t + 15 + n)
        n += 1
    return first_ms, n / (time.perf_counter() - start)


def _in_process_ms(kind: str, n: int = 300) -> float:
    """Median ms of collect + generate_latest alone, without HTTP."""
    from prometheus_client import CollectorRegistry, generate_latest

    from exporters.gpu_collector import GpuCollector

    source = _source(kind)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuCollector(source, cache_seconds=0))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        generate_latest(registry)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(args: argparse.Namespace) -> dict:
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    try:
        for kind in VARIANTS:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True
            )
            procs[kind] = proc
            urls[kind] = f"http://127.0.0.1:{int(proc.stdout.readline())}/metrics"
        time.sleep(1.0)  # let the gauge loops fill their registries

        results: dict[str, dict] = {kind: {"round_medians_ms": []} for kind in VARIANTS}
        for kind in VARIANTS:
            for _ in range(20):
                _scrape(urls[kind])
        for _ in range(args.rounds):
            for kind in VARIANTS:
                times = []
                for _ in range(args.scrapes):
                    elapsed, size = _scrape(urls[kind])
                    times.append(elapsed)
                results[kind]["round_medians_ms"].append(statistics.median(times) * 1000)
                results[kind]["p95_ms"] = sorted(times)[int(0.95 * len(times))] * 1000
                results[kind]["bytes"] = size
        for kind in VARIANTS:
            r = results[kind]
            r["median_ms"] = statistics.median(r["round_medians_ms"])
            r["rss_mb"] = _rss_mb(procs[kind].pid)

        # Idle CPU: all variants side by side, each scraped every 15 s.
        before = {kind: _cpu_seconds(p.pid) for kind, p in procs.items()}
        start = time.monotonic()
        next_scrape = start
        while True:
            now = time.monotonic()
            if now - start >= args.window:
                break
            if now >= next_scrape:
                for kind in VARIANTS:
                    _scrape(urls[kind])
                next_scrape += SCRAPE_INTERVAL_S
            time.sleep(min(0.5, max(0.0, next_scrape - time.monotonic())))
        elapsed = time.monotonic() - start
        for kind, p in procs.items():
            results[kind]["idle_cpu_pct"] = (_cpu_seconds(p.pid) - before[kind]) / elapsed * 100
        window = elapsed
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(5)
            proc.stdout.close()
    return {
        "date": args.date,
        "machine": _machine(),
        "versions": _versions(),
        "gpus": GPUS,
        "scrapes_per_round": args.scrapes,
        "rounds": args.rounds,
        "idle_window_s": round(window, 1),
        "results": results,
        "render_first_ms_per_host": (render := _render_throughput())[0],
        "render_hosts_per_s": render[1],
        "in_process_ms": {kind: _in_process_ms(kind) for kind in VARIANTS if not kind.endswith("-gauges")},
        "real_gpus": _gpus() if "nvml" in VARIANTS else [],
    }


def report(data: dict) -> str:
    r = data["results"]
    lines = [
        f"Date {data['date']}; {data['machine']['nproc']} CPUs ({data['machine']['cpu']}), "
        f"{data['machine']['memory_gib']} GiB; "
        + ", ".join(f"{k} {v}" for k, v in data["versions"].items()),
        *([f"Real GPUs (nvml variants): {'; '.join(data['real_gpus'])}"] if data["real_gpus"] else []),
        "",
        f"{data['gpus']} GPUs (simulated and fake variants); {data['rounds']} rounds x {data['scrapes_per_round']} scrapes; "
        f"idle window {data['idle_window_s']} s, scrape every {SCRAPE_INTERVAL_S:.0f} s.",
        "",
        "| variant | median scrape (ms) | p95 (ms) | body (bytes) | RSS (MB) | idle CPU (% core) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in VARIANTS:
        x = r[kind]
        lines.append(
            f"| {kind} | {x['median_ms']:.2f} | {x['p95_ms']:.2f} | {x['bytes']} | "
            f"{x['rss_mb']:.1f} | {x['idle_cpu_pct']:.3f} |"
        )
    lines += [
        "",
        "Ratio ours / plain Gauges (median scrape): "
        f"sim {r['sim']['median_ms'] / r['sim-gauges']['median_ms']:.2f}, "
        f"nvml-fake {r['nvml-fake']['median_ms'] / r['nvml-fake-gauges']['median_ms']:.2f}"
        + (f", nvml {r['nvml']['median_ms'] / r['nvml-gauges']['median_ms']:.2f}" if "nvml" in r else "")
        + ".",
        "Collect + generate_latest without HTTP (median ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in data["in_process_ms"].items())
        + ".",
        f"SimFleet.render, 8-GPU hosts, one core: {data['render_hosts_per_s']:.0f} hosts/s warm; "
        f"first render per host (builds its template) {data['render_first_ms_per_host']:.2f} ms.",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", choices=BASE_VARIANTS + REAL_VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--nvml", action="store_true",
                   help="also measure the real NVML (needs an NVIDIA driver and GPU)")
    p.add_argument("--scrapes", type=int, default=200, help="scrapes per round (default 200)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--window", type=float, default=60.0, help="idle CPU window, s (default 60)")
    p.add_argument("--date", default=datetime.date.today().isoformat())
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if args.nvml:
        global VARIANTS
        VARIANTS = BASE_VARIANTS + REAL_VARIANTS
    data = measure(args)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
