"""fleetscope-exporter proves when pushing: flags, refusals, and a real exporter process answering a challenge."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from exporters import prover
from exporters.cli import main
from exporters.sim import HostSpec, SimFleet
from tests.test_prover_client import TOKEN, Collector, gpu

COMMAND = [sys.executable, "-c", "from exporters.cli import main; raise SystemExit(main())"]
RTX4090 = "NVIDIA GeForce RTX 4090"


def test_the_sim_backend_refuses_the_cupy_prover(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--backend", "sim", "--port", "0", "--push", "http://127.0.0.1:9/api/v1/push", "--token", "t",
              "--prover", "cupy"])
    assert exit_.value.code == 2
    assert "--prover cupy: --prover cupy proves real GPUs" in capsys.readouterr().err


def test_the_cupy_prover_without_cupy_says_what_to_install(capsys):
    if prover.cupy_available():
        pytest.skip("CuPy and a CUDA GPU are here: the refusal cannot happen")
    with pytest.raises(SystemExit) as exit_:
        main(["--backend", "nvml", "--port", "0", "--push", "http://127.0.0.1:9/api/v1/push", "--token", "t",
              "--prover", "cupy"])
    assert exit_.value.code == 2
    assert "pip install 'fleetscope[cuda]'" in capsys.readouterr().err


@pytest.fixture
async def collector(aiohttp_server):
    fake = Collector()
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


def start_exporter(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*COMMAND, "--host", "127.0.0.1", "--port", "0", *args], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"serving /metrics on [\d.]+:(\d+)", proc.stderr.readline())
        if match:
            return proc, f"http://127.0.0.1:{match.group(1)}/metrics"
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("exporter did not start")


async def test_a_pushing_sim_exporter_answers_a_challenge_and_counts_its_verdict(collector, tmp_path):
    fleet = SimFleet(4, [HostSpec("rig-1", "healthy", n_gpus=2, model=RTX4090)])
    uuids = [identity.uuid for identity, _ in fleet.reading(0, time.time()).gpus]
    proc, metrics_url = start_exporter("--backend", "sim", "--seed", "4", "--host-id", "rig-1", "--gpus", "2",
                                       "--model", RTX4090, "--push", f"{collector.base_url}/api/v1/push",
                                       "--token", TOKEN, "--spool-dir", str(tmp_path / "spool"))
    try:
        collector.offer([gpu(u) for u in uuids])
        deadline = time.monotonic() + 20
        while len(collector.verdicts) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert {u: v.verdict for u, v in collector.verdicts.items()} == {u: "passed" for u in uuids}
        await asyncio.sleep(0.2)  # the client counts the verdict once the open is answered
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics_url, timeout=5).read().decode())
        assert 'fleet_exporter_proof_verdicts_total{verdict="passed"} 2.0' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        proc.stderr.close()


async def test_no_prove_never_asks_for_work(collector, tmp_path):
    proc, _ = start_exporter("--backend", "sim", "--push", f"{collector.base_url}/api/v1/push", "--token", TOKEN,
                             "--interval", "0.2", "--spool-dir", str(tmp_path / "spool"), "--no-prove")
    try:
        deadline = time.monotonic() + 10
        while "/api/v1/push" not in collector.paths and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        proc.stderr.close()
    assert "/api/v1/push" in collector.paths
    assert not [p for p in collector.paths if p.startswith("/api/v1/proof")]
