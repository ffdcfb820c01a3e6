"""A fresh ``fleetscope demo`` has content from its first answer: a live fleet, a past, money and a bundle.

The demo writes simulated history before its services start, runs the
integrity checks and publishes a first snapshot; so the very first answer of
its explorer already shows online nodes, GPU-hours and revenue, the
simulated span, and a downloadable bundle with the fleet in it.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import time
import urllib.request
import zipfile

from tests.test_demo import START_LIMIT_S, demo_ports, get_json, start_demo


def test_the_first_answer_of_a_fresh_demo_already_shows_a_live_fleet_with_a_past(dsn, tmp_path):
    ports = demo_ports()
    proc = start_demo(dsn, tmp_path, ports, args=("--interval", "60", "--history-days", "1"),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{ports['dashboard']}"
    try:
        deadline = time.monotonic() + START_LIMIT_S
        first = None
        while first is None:
            assert proc.poll() is None, f"the demo exited with {proc.returncode}: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "the explorer never answered"
            try:
                first = get_json(f"{base}/api/v1/fleet")
            except OSError:
                time.sleep(0.2)
        # The very first snapshot: no 0-node tick, no $0.
        assert first["nodes"]["online"] > 100 and first["gpus"]["online"] > 500
        assert first["gpus"]["hired"] > 0
        assert first["gpu_hours"]["last_24h"] > 0 and first["revenue_usd"]["total"] > 0
        assert first["integrity"]["open_findings"] > 0  # the checks ran before anything served
        series = get_json(f"{base}/api/v1/fleet/series?range=24h")
        assert series["simulated"] and series["simulated"][0]["note"].startswith("simulated history")
        # A day of points (every 15 minutes), none of them empty.
        assert len(series["points"]) > 90 and all(p["gpus"]["registered"] > 0 for p in series["points"])
        published = get_json(f"{base}/api/v1/snapshots")
        assert published["items"] and published["chain_ok"]
        with urllib.request.urlopen(base + published["items"][0]["bundle_url"], timeout=30) as response:
            bundle = zipfile.ZipFile(io.BytesIO(response.read()))
        nodes = list(csv.DictReader(io.TextIOWrapper(bundle.open("nodes.csv"), "utf-8")))
        assert len(nodes) == first["nodes"]["registered"]
        snapshot = json.loads(bundle.read("snapshot.json"))
        assert snapshot["nodes"]["registered"] == first["nodes"]["registered"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "days of SIMULATED history written in" in out
