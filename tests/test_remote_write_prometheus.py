"""A real Prometheus server remote-writes a fleet to the collector (issue 18, "Done when").

Debian's ``prometheus`` (installed by .ci/run) scrapes the project's sim
exporter and two 127.0.0.1 servers of recorded dcgm-exporter and
nvidia_gpu_exporter payloads every second, puts ``fleetscope_node_id`` on each
target with the relabelling of docs/prometheus.md, and remote-writes to a
collector process on a database of the test's own. The nodes come online,
their GPUs' telemetry arrives, the database is frozen for a while and nothing
is lost (no node's observations show a gap, Prometheus failed no sample),
and a target that stops goes offline within its grace.
"""

from __future__ import annotations

import asyncio
import http.server
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from fleetscope.registry import create_operator, register_node
from fleetscope.states import node_online
from tests.collector_harness import PAYLOADS
from tests.collector_process import ingest_only_collector
from tests.conftest import free_port
from tests.frozen_database import frozen

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="needs Debian's prometheus binary on PATH (.ci/run installs it)")

INTERVAL_S, GRACE_S = 5, 10
FREEZE_S = 6
# Prometheus scrapes every 1 s and sends within ~1 s; a push may come every
# interval / 2 = 2.5 s; an observation gap above this means lost samples.
MAX_GAP_S = 4.5
# A scrape's samples reach the collector within a scrape interval plus batch_send_deadline.
IN_FLIGHT_S = 3


class _Payload(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def _serve(fixture: str) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (_Payload,), {"body": (PAYLOADS / fixture).read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _sim_exporter() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", "from exporters.cli import main; raise SystemExit(main())",
                             "--backend", "sim", "--gpus", "2", "--seed", "18", "--host", "127.0.0.1", "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"serving /metrics on [\d.]+:(\d+)", proc.stderr.readline())
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
            return proc, int(match.group(1))
    proc.kill()
    raise AssertionError("the sim exporter did not start")


def _prometheus_config(targets: dict[int, int], collector_port: int, token: str) -> str:
    """The docs/prometheus.md configuration, with this test's ports and node ids."""
    relabel = "".join(f"""
      - source_labels: [__address__]
        regex: '127\\.0\\.0\\.1:{port}'
        target_label: fleetscope_node_id
        replacement: '{node_id}'""" for node_id, port in targets.items())
    addresses = ", ".join(f"'127.0.0.1:{port}'" for port in targets.values())
    return f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: gpus
    static_configs:
      - targets: [{addresses}]
    relabel_configs:{relabel}
remote_write:
  - url: http://127.0.0.1:{collector_port}/api/v1/write
    authorization:
      credentials: {token}
    write_relabel_configs:
      - source_labels: [fleetscope_node_id]
        regex: '.+'
        action: keep
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
"""


def _last_ok(dsn: str) -> dict[int, datetime]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT node_id, max(time) FROM observations WHERE ok GROUP BY node_id").fetchall())


async def _until(check, within_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, what
            return result
        await asyncio.sleep(0.5)


def _prometheus_counter(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_a_prometheus_server_remote_writes_a_fleet_that_comes_online_survives_an_outage_and_goes_offline(
        own_server, tmp_path):
    server, dsn = own_server
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, token = create_operator(conn, "site-with-prometheus")
        sim, dcgm, smi = (register_node(conn, operator_id=operator_id, name=name, interval_s=INTERVAL_S,
                                        grace_s=GRACE_S).node_id for name in ("sim", "dcgm", "smi"))
    exporter, sim_port = _sim_exporter()
    dcgm_server = _serve("dcgm_exporter_default_a100x8.prom")
    smi_server = _serve("nvidia_gpu_exporter_rtx3090x8.prom")
    collector_port, prometheus_port = free_port(), free_port()
    collector = ingest_only_collector(dsn, collector_port, tmp_path / "spool")
    config = tmp_path / "prometheus.yml"
    config.write_text(_prometheus_config({sim: sim_port, dcgm: dcgm_server.server_address[1],
                                          smi: smi_server.server_address[1]}, collector_port, token))
    prometheus = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = {sim: 2, dcgm: 8, smi: 8}
    try:
        # The nodes come online and their GPUs' telemetry arrives.
        await _until(lambda: all(node_online(last_ok=_last_ok(dsn).get(n), grace_s=GRACE_S,
                                             at=datetime.now(timezone.utc)) for n in nodes), 60,
                     "the remote-written nodes did not come online")

        def gpus_with_telemetry() -> dict[int, int]:
            with psycopg.connect(dsn, autocommit=True) as conn:
                return dict(conn.execute("SELECT node_id, count(DISTINCT gpu_uuid) FROM gpu_samples "
                                         "WHERE power_w IS NOT NULL AND temp_c IS NOT NULL GROUP BY node_id"))
        await _until(lambda: gpus_with_telemetry() == nodes, 20, "the GPUs' telemetry did not arrive")

        # A database outage in the middle: nothing is lost.
        frozen_at = datetime.now(timezone.utc)
        with frozen(server):
            await asyncio.sleep(FREEZE_S)
        thawed_at = datetime.now(timezone.utc)
        await asyncio.sleep(6)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT node_id, time FROM observations WHERE ok AND time BETWEEN %s AND %s "
                                "ORDER BY node_id, time", (frozen_at, thawed_at)).fetchall()
            around = conn.execute("SELECT node_id, array_agg(time ORDER BY time) FROM observations "
                                  "WHERE ok AND time > %s - interval '3 s' GROUP BY node_id",
                                  (frozen_at,)).fetchall()
        assert {node for node, _ in rows} == set(nodes), "nothing received during the outage was stored"
        for node, times in around:
            gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
            assert max(gaps) <= MAX_GAP_S, f"node {node} lost observations across the outage: gaps {gaps}"
        assert _prometheus_counter(prometheus_port, "prometheus_remote_storage_samples_failed_total") == 0

        # A target that stops goes offline within its grace; the others stay online.
        smi_server.shutdown()
        smi_server.server_close()
        stopped_at = datetime.now(timezone.utc)
        await asyncio.sleep(GRACE_S + IN_FLIGHT_S + 1)
        now = datetime.now(timezone.utc)
        last = _last_ok(dsn)
        # Scrapes from before the stop may still be on their way (received, so observed, after it).
        assert last[smi] < stopped_at + timedelta(seconds=IN_FLIGHT_S)
        assert not node_online(last_ok=last[smi], grace_s=GRACE_S, at=now)
        assert all(node_online(last_ok=last[n], grace_s=GRACE_S, at=now) for n in (sim, dcgm))
        with psycopg.connect(dsn, autocommit=True) as conn:
            failed = conn.execute("SELECT count(*) FROM observations WHERE node_id = %s AND NOT ok AND time > %s",
                                  (smi, stopped_at)).fetchone()[0]
        assert failed > 0, "Prometheus' up 0 for the stopped target was not recorded as a failed observation"
    finally:
        for proc in (prometheus, collector, exporter):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (prometheus, collector, exporter):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        dcgm_server.shutdown()
        dcgm_server.server_close()
        smi_server.server_close()  # (shut down above, or left to its daemon thread on a failure)
