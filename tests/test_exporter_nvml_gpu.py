"""The NVML exporter on a real NVIDIA GPU, checked against nvidia-smi and through the collector.

Skipped where NVML cannot start (no NVIDIA driver: CI and this project's
machines). On a GPU host it runs the exporter exactly as an operator does:
real pynvml, real HTTP, then the real ``fleetscope-exporter`` command pushing
into a collector with the production writer and a real PostgreSQL, and the
fleet snapshot and integrity checks over what arrived. nvidia-smi, a separate
program, is the reference for what the GPUs are.
"""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pynvml
import pytest

from collector.app import default_components, make_app
from collector.parse import PayloadParser, parse_reference
from exporters.gpu_collector import GpuCollector
from exporters.nvml import NvmlSource
from fleetscope import gpu_models
from fleetscope.integrity import run_checks
from fleetscope.snapshot import fleet_snapshot
from tests.collector_harness import TEXT_TYPE, collector_settings, register
from tests.conftest import free_port
from tests.fixtures.exporter import support


def _nvml_problem() -> str | None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"NVML cannot start here ({exc}): no NVIDIA driver"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "NVML started but sees no GPU"
    finally:
        pynvml.nvmlShutdown()
    if shutil.which("nvidia-smi") is None:
        return "NVML works but nvidia-smi (the reference) is not installed"
    return None


_PROBLEM = _nvml_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=f"needs a real NVIDIA GPU: {_PROBLEM}")

SMI_FIELDS = ("index", "uuid", "name", "memory.total", "power.limit", "pci.bus_id")


def nvidia_smi() -> list[dict[str, str]]:
    """What nvidia-smi says each GPU is (memory in MiB, power limit in W)."""
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
        check=True, capture_output=True, text=True, timeout=30).stdout
    return [dict(zip(SMI_FIELDS, (v.strip() for v in row))) for row in csv.reader(out.splitlines())]


@pytest.fixture(scope="module")
def smi() -> list[dict[str, str]]:
    return nvidia_smi()


@pytest.fixture
def exporter_url():
    source = NvmlSource()
    try:
        with support.serve(support.registry_of(GpuCollector(source, cache_seconds=0))) as url:
            yield url
    finally:
        source.close()


def by_uuid(families: dict[str, list], name: str) -> dict[str, float]:
    return {s.labels["UUID"]: s.value for s in families.get(name, [])}


def test_every_gpu_nvidia_smi_lists_is_served_with_its_identity(exporter_url, smi):
    m = support.scrape(exporter_url)
    assert support.value(m, "fleet_exporter_last_collect_success") == 1
    info = {s.labels["UUID"]: s.labels for s in m["fleet_gpu_info"]}
    assert set(info) == {g["uuid"] for g in smi}
    for g in smi:
        labels = info[g["uuid"]]
        assert labels["gpu"] == g["index"]
        assert labels["modelName"] == g["name"]
        # nvidia-smi prints the bus id with a 4-digit domain, NVML's busId has 8.
        assert labels["pci_bus_id"].lower().endswith(g["pci.bus_id"].lower()[-12:])
        assert int(labels["memory_total_bytes"]) // (1024 * 1024) == int(g["memory.total"])
        used = by_uuid(m, "DCGM_FI_DEV_FB_USED")[g["uuid"]]
        free = by_uuid(m, "DCGM_FI_DEV_FB_FREE")[g["uuid"]]
        # Whole MiB each, and the driver's reserved memory is in neither.
        assert 0.9 * int(g["memory.total"]) <= used + free <= int(g["memory.total"])


def test_readings_are_physical_and_the_energy_counter_runs(exporter_url, smi):
    first = support.scrape(exporter_url)
    time.sleep(1.5)
    second = support.scrape(exporter_url)
    for g in smi:
        u = g["uuid"]
        assert 0 <= by_uuid(second, "DCGM_FI_DEV_GPU_UTIL")[u] <= 100
        assert 0 <= by_uuid(second, "DCGM_FI_DEV_MEM_COPY_UTIL")[u] <= 100
        assert 5 <= by_uuid(second, "DCGM_FI_DEV_GPU_TEMP")[u] <= 110
        power = by_uuid(second, "DCGM_FI_DEV_POWER_USAGE")[u]
        assert 0 < power <= 1.1 * float(g["power.limit"])
        assert by_uuid(second, "DCGM_FI_DEV_SM_CLOCK")[u] > 0
        assert by_uuid(second, "DCGM_FI_DEV_MEM_CLOCK")[u] > 0
        energy = by_uuid(second, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")[u]
        assert energy > by_uuid(first, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")[u]  # mJ, an idle GPU draws tens of W


def test_the_model_is_in_the_reference_table_and_agrees_with_its_spec(exporter_url, smi):
    m = support.scrape(exporter_url)
    for s in m["fleet_gpu_info"]:
        row = gpu_models.lookup(s.labels["modelName"])
        assert row is not None, f"{s.labels['modelName']!r} is not in fleetscope/data/gpu_models.csv"
        problems = gpu_models.spec_problems(
            row, memory_total_bytes=int(s.labels["memory_total_bytes"]),
            sm_count=int(s.labels["sm_count"]) if s.labels.get("sm_count") else None,
            max_sm_clock_mhz=int(s.labels["max_sm_clock_mhz"]) if s.labels.get("max_sm_clock_mhz") else None)
        assert problems == [], f"a genuine {row.model} would be flagged spec_mismatch: {problems}"


def test_the_sm_count_agrees_with_cuda(exporter_url, smi):
    """NVML gives whole GPUs no SM count; the exporter's (cores / cores per SM) must be CUDA's own."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    cuda = {}
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        cuda[f"GPU-{props.uuid}"] = props.multi_processor_count
    m = support.scrape(exporter_url)
    reported = {s.labels["UUID"]: s.labels["sm_count"] for s in m["fleet_gpu_info"]}
    assert {u: reported[u] for u in cuda} == {u: str(n) for u, n in cuda.items()}


def _load_gpu(seconds: float, ready: threading.Event, done: threading.Event) -> None:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ready.set()
    end = time.monotonic() + seconds
    while time.monotonic() < end and not done.is_set():
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def test_utilisation_and_power_follow_a_real_load(exporter_url, smi):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device to load")
    idle = support.scrape(exporter_url)
    ready, done = threading.Event(), threading.Event()
    worker = threading.Thread(target=_load_gpu, args=(8.0, ready, done))
    worker.start()
    try:
        assert ready.wait(60)
        time.sleep(3.0)  # NVML's utilisation is averaged over its last sample period (up to 1 s)
        busy = support.scrape(exporter_url)
    finally:
        done.set()
        worker.join()
    u = smi[torch.cuda.current_device()]["uuid"]
    assert by_uuid(busy, "DCGM_FI_DEV_GPU_UTIL")[u] >= 80
    assert by_uuid(busy, "DCGM_FI_DEV_POWER_USAGE")[u] > by_uuid(idle, "DCGM_FI_DEV_POWER_USAGE")[u]
    assert by_uuid(busy, "DCGM_FI_DEV_FB_USED")[u] > by_uuid(idle, "DCGM_FI_DEV_FB_USED")[u]


def test_the_collector_parses_the_real_payload_like_the_reference(exporter_url, smi):
    body = support.fetch(exporter_url).encode()
    fast = PayloadParser().parse(body, content_type=TEXT_TYPE)
    reference = parse_reference(body, content_type=TEXT_TYPE)
    assert fast.rejects == {} and reference.rejects == {}
    assert {s.gpu_uuid for s in fast.samples} == {g["uuid"] for g in smi}
    assert {i.uuid: i.model for i in fast.identities} == {g["uuid"]: g["name"] for g in smi}
    # One body parsed twice: the fast path must give exactly the reference's rows.
    assert fast.samples == reference.samples and fast.identities == reference.identities


async def _wait(dsn: str, sql: str, args: tuple, *, want: int, timeout_s: float = 60.0) -> list[tuple]:
    deadline = time.monotonic() + timeout_s
    while True:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(sql, args).fetchall()
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def test_the_exporter_command_pushes_a_real_gpu_into_the_fleet(aiohttp_client, dsn, tmp_path,
                                                                      operator_token, smi):
    settings = collector_settings(dsn, tmp_path)
    client = await aiohttp_client(make_app(settings, components=default_components(settings)))
    node_id, token = await register(client, operator_token, "real-gpu-host", scrape_url=None, interval_s=5)
    push_url = str(client.make_url("/api/v1/push"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    exporter = subprocess.Popen(
        [sys.executable, "-m", "exporters.cli", "--backend", "nvml", "--host", "127.0.0.1", "--port", "0",
         "--push", push_url, "--token", token, "--interval", "1", "--spool-dir", str(tmp_path / "exporter-spool")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        n = len(smi)
        samples = await _wait(dsn, "SELECT DISTINCT gpu_uuid FROM gpu_samples WHERE node_id = %s", (node_id,),
                              want=n)
        gpus = await _wait(dsn, "SELECT gpu_uuid, model, memory_total_bytes, virtualization_mode FROM gpus"
                                " WHERE node_id = %s ORDER BY gpu_uuid", (node_id,), want=n)
    finally:
        exporter.terminate()
        output = exporter.communicate(timeout=10)[0]
    assert len(samples) == n, f"the exporter's pushes did not arrive; its output:\n{output}"
    assert {g[0] for g in gpus} == {g["uuid"] for g in smi}
    for uuid, model, memory, mode in gpus:
        g = next(x for x in smi if x["uuid"] == uuid)
        assert model == g["name"]
        assert memory // (1024 * 1024) == int(g["memory.total"])
        assert mode in ("none", "passthrough")

    at = datetime.now(timezone.utc)
    with psycopg.connect(dsn, autocommit=True) as conn:
        run_checks(conn, at=at)
        findings = conn.execute("SELECT kind, gpu_uuid, evidence FROM integrity_findings WHERE node_id = %s",
                                (node_id,)).fetchall()
        body = fleet_snapshot(conn, as_of=at).body
    assert findings == [], f"a genuine GPU was flagged: {findings}"
    assert body["gpus"]["registered"] == body["gpus"]["online"] == body["gpus"]["verified"] == n
    assert body["nodes"]["online"] == 1
    online_by_model: dict[str, int] = {}
    for g in smi:
        name = g["name"]
        online_by_model[name] = online_by_model.get(name, 0) + 1
    assert {m["model"]: m["online"] for m in body["by_model"]} == online_by_model
    assert all(c["ok"] for c in body["checks"]), body["checks"]


async def test_the_collector_scrapes_the_exporter_command_on_a_real_gpu(aiohttp_client, dsn, tmp_path,
                                                                         operator_token, smi):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    exporter = subprocess.Popen(
        [sys.executable, "-m", "exporters.cli", "--backend", "nvml", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        settings = collector_settings(dsn, tmp_path)
        client = await aiohttp_client(make_app(settings, components=default_components(settings)))
        node_id, _ = await register(client, operator_token, "scraped-gpu-host",
                                    scrape_url=f"http://127.0.0.1:{port}/metrics", interval_s=5)
        observations = await _wait(dsn, "SELECT ok, error, latency_ms FROM observations WHERE node_id = %s"
                                        " AND source = 'scrape' ORDER BY time", (node_id,), want=2)
        samples = await _wait(dsn, "SELECT DISTINCT gpu_uuid FROM gpu_samples WHERE node_id = %s", (node_id,),
                              want=len(smi))
    finally:
        exporter.terminate()
        output = exporter.communicate(timeout=10)[0]
    assert len(observations) >= 2, f"no scrapes recorded; the exporter said:\n{output}"
    assert all(ok for ok, _, _ in observations), observations
    assert {u for (u,) in samples} == {g["uuid"] for g in smi}
