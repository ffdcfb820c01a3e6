"""The fleetscope-exporter command, run as an operator would run it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporters.cli import main

COMMAND = [sys.executable, "-c", "from exporters.cli import main; raise SystemExit(main())"]


def start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [*COMMAND, "--host", "127.0.0.1", "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"serving /metrics on [\d.]+:(\d+)", line)
        if match:
            return proc, f"http://127.0.0.1:{match.group(1)}/metrics"
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("exporter did not start")


def test_the_sim_backend_serves_metrics_and_stops_cleanly_on_sigterm():
    proc, url = start("--backend", "sim", "--seed", "3", "--profile", "virtualized", "--gpus", "2")
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stderr.close()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert len(families["DCGM_FI_DEV_GPU_UTIL"].samples) == 2
    assert {s.labels["virtualization_mode"] for s in families["fleet_gpu_info"].samples} == {
        "vgpu"
    }
    assert "python_info" not in families  # a registry of its own, no client noise


def test_the_nvml_backend_without_a_driver_serves_collect_success_zero():
    # No NVIDIA driver on the CI machine: the exporter still starts and says so.
    proc, url = start("--backend", "nvml")
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        proc.stderr.close()
    if "DCGM_FI_DEV_GPU_UTIL" in body:
        pytest.skip("this machine has NVIDIA GPUs")
    assert "fleet_exporter_last_collect_success 0.0" in body


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--push", "http://c:9300/api/v1/push"], "--token"),
        (["--push", "ftp://c/x", "--token", "t"], "--push"),
        (["--interval", "0"], "--interval"),
        (["--backend", "cuda"], "--backend"),
        (["--token", "t"], "--token is only used with --push"),
        (["--port", "70000"], "--port"),
    ],
)
def test_a_bad_flag_stops_the_exporter_with_a_message_naming_it(argv, message, capsys):
    env_token = os.environ.pop("FLEETSCOPE_EXPORTER_TOKEN", None)
    try:
        with pytest.raises(SystemExit) as exc:
            main(argv)
    finally:
        if env_token is not None:
            os.environ["FLEETSCOPE_EXPORTER_TOKEN"] = env_token
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
