"""The Apple Silicon backend, on ioreg text fixtures (no Mac needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters.apple import (
    ACCELERATOR_COMMAND,
    MEMSIZE_COMMAND,
    PLATFORM_COMMAND,
    AppleSource,
    parse_accelerators,
    parse_platform_uuid,
)
from exporters.gpu_collector import GpuCollector
from tests.fixtures.exporter import support

FIXTURES = Path(__file__).parent / "fixtures" / "exporter"
UUID = "3F1C2A7E-5B6D-4E8F-9A0B-1C2D3E4F5A6B"


def recorded(accelerator: str = "ioreg-accelerator-m2pro.txt"):
    outputs = {
        ACCELERATOR_COMMAND: (FIXTURES / accelerator).read_text(),
        PLATFORM_COMMAND: (FIXTURES / "ioreg-platform.txt").read_text(),
        MEMSIZE_COMMAND: "34359738368\n",
    }

    def run(argv):
        return outputs[tuple(argv)]

    return run


def test_it_reads_utilisation_and_memory_from_performance_statistics():
    (acc,) = parse_accelerators((FIXTURES / "ioreg-accelerator-m2pro.txt").read_text())
    assert acc["model"] == "Apple M2 Pro"
    assert acc["cores"] == 19
    assert acc["stats"]["Device Utilization %"] == 18
    assert acc["stats"]["In use system memory"] == 524288000


def test_it_uses_the_hardware_uuid_as_identity():
    assert parse_platform_uuid((FIXTURES / "ioreg-platform.txt").read_text()) == UUID
    with pytest.raises(ValueError):
        parse_platform_uuid("")


def test_a_mac_is_served_under_the_dcgm_names():
    source = AppleSource(run=recorded(), hostname="mac-mini-7")
    with support.serve(support.registry_of(GpuCollector(source, cache_seconds=0))) as url:
        m = support.scrape(url)
    labels = {"UUID": UUID, "gpu": "0", "modelName": "Apple M2 Pro", "Hostname": "mac-mini-7"}
    assert support.value(m, "DCGM_FI_DEV_GPU_UTIL", **labels) == 18
    assert support.value(m, "DCGM_FI_DEV_FB_USED", **labels) == 500  # MiB
    (info,) = m["fleet_gpu_info"]
    assert info.labels["architecture"] == "apple"
    assert info.labels["gpu_cores"] == "19"
    assert info.labels["memory_total_bytes"] == "34359738368"
    assert info.labels["serial"] == ""
    assert "DCGM_FI_DEV_POWER_USAGE" not in m  # needs root (powermetrics)
    assert support.value(m, "fleet_exporter_last_collect_success") == 1


def test_an_accelerator_without_statistics_still_has_an_identity():
    source = AppleSource(run=recorded("ioreg-accelerator-idle-no-stats.txt"), hostname="m1")
    reading = source.read()
    ((identity, telemetry),) = reading.gpus
    assert identity.model_name == "Apple M1"
    assert telemetry.gpu_util is None and telemetry.fb_used_mib is None


def test_no_ioreg_means_collect_success_zero():
    def run(argv):
        raise FileNotFoundError(argv[0])

    source = AppleSource(run=run, hostname="linux-box")
    with support.serve(support.registry_of(GpuCollector(source, cache_seconds=0))) as url:
        m = support.scrape(url)
    assert support.value(m, "fleet_exporter_last_collect_success") == 0
