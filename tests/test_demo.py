"""``fleetscope demo``: one command serves a simulated fleet, the collector and the explorer, and stops them all.

The demo runs as a user runs it (``fleetscope demo`` in its own process), on
a test database through ``FLEETSCOPE_DSN`` instead of the embedded server,
with its data directory in the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import free_port

START_LIMIT_S = 120


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.load(response)


def start_demo(dsn: str, tmp_path, ports: dict[str, int], *,
               args: tuple[str, ...] = ("--interval", "5", "--history-days", "0"), **popen) -> subprocess.Popen:
    """The demo; by default a fast one (5 s interval) without simulated history (tests/test_demo_first_minute.py has it)."""
    env = {**os.environ, "FLEETSCOPE_DSN": dsn, "FLEETSCOPE_DATA_DIR": str(tmp_path / "data")}
    return subprocess.Popen(
        [sys.executable, "-m", "fleetscope.cli", "demo", *args,
         *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port)))],
        env=env, **popen)


def demo_ports() -> dict[str, int]:
    return {"collector": free_port(), "sim": free_port(), "dashboard": free_port()}


def test_the_demo_serves_a_live_fleet_and_takes_every_server_down_when_stopped(dsn, tmp_path):
    ports = demo_ports()
    proc = start_demo(dsn, tmp_path, ports, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fleet = None
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while fleet is None or fleet["nodes"]["online"] == 0:
            assert proc.poll() is None, f"the demo exited with {proc.returncode}: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no online node in the explorer"
            try:
                fleet = get_json(f"http://127.0.0.1:{ports['dashboard']}/api/v1/fleet")
            except OSError:
                pass
            time.sleep(0.5)
        assert fleet["nodes"]["registered"] > 0 and fleet["gpus"]["online"] > 0
        assert get_json(f"http://127.0.0.1:{ports['collector']}/healthz")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "fleetscope demo is running" in out
    assert not any(listening(port) for port in ports.values()), "a demo server outlived the demo"


def test_a_demo_that_fails_once_its_dashboard_is_up_takes_the_dashboard_down(dsn, tmp_path):
    # Its standard output is a pipe whose reader has gone (as with `| head`):
    # the banner printed once the dashboard answers fails, and the demo with it.
    ports = demo_ports()
    read, write = os.pipe()
    os.close(read)
    try:
        proc = start_demo(dsn, tmp_path, ports, stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    _, err = proc.communicate(timeout=START_LIMIT_S)
    assert proc.returncode != 0 and "BrokenPipeError" in err
    assert not listening(ports["dashboard"]), "the dashboard outlived the demo"
