"""The NVML backend against an in-process fake NVML, served over real HTTP."""

from __future__ import annotations


import pynvml
import pytest

from exporters.gpu_collector import GpuCollector
from exporters.nvml import NvmlSource
from tests.fixtures.exporter import support

fake_nvml = support.load("fake_nvml")
FakeGpu, FakeNvml, NOT_SUPPORTED = fake_nvml.FakeGpu, fake_nvml.FakeNvml, fake_nvml.NOT_SUPPORTED

UUID0 = "GPU-11111111-2222-4333-8444-555555555555"
UUID1 = "GPU-66666666-7777-4888-9999-aaaaaaaaaaaa"


def two_gpus(**second: object) -> FakeNvml:
    return FakeNvml(
        gpus=[
            FakeGpu(uuid=UUID0, minor=0),
            FakeGpu(uuid=UUID1, minor=1, bus_id=b"00000000:2A:00.0", **second),
        ]
    )


class Clock:
    def __init__(self, t: float = 1_790_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def served(nvml: FakeNvml, *, clock=None):
    source = NvmlSource(nvml, hostname="gpu-host-1", clock=clock or Clock())
    return support.serve(support.registry_of(GpuCollector(source, cache_seconds=0)))


def test_it_shows_every_gpu_under_dcgm_names_and_labels():
    with served(two_gpus()) as url:
        m = support.scrape(url)
    labels = {
        "gpu": "1",
        "UUID": UUID1,
        "pci_bus_id": "00000000:2A:00.0",
        "device": "nvidia1",
        "modelName": "NVIDIA A100-SXM4-80GB",
        "Hostname": "gpu-host-1",
    }
    assert support.value(m, "DCGM_FI_DEV_GPU_UTIL", **labels) == 93
    assert support.value(m, "DCGM_FI_DEV_MEM_COPY_UTIL", **labels) == 41
    assert support.value(m, "DCGM_FI_DEV_FB_USED", **labels) == 1024  # MiB
    assert support.value(m, "DCGM_FI_DEV_FB_FREE", **labels) == 81920 - 1024
    assert support.value(m, "DCGM_FI_DEV_POWER_USAGE", **labels) == pytest.approx(312.456)
    assert support.value(m, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", **labels) == 987_654_321
    assert support.value(m, "DCGM_FI_DEV_GPU_TEMP", **labels) == 67
    assert support.value(m, "DCGM_FI_DEV_SM_CLOCK", **labels) == 1395
    assert support.value(m, "DCGM_FI_DEV_MEM_CLOCK", **labels) == 1593
    assert support.value(m, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", **labels) == 2
    assert support.value(m, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", **labels) == 5
    assert support.value(m, "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", **labels) == 0
    assert support.value(m, "DCGM_FI_DEV_XID_ERRORS", **labels) == 0
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE"):
        assert len(m[name]) == 2
    assert support.value(m, "fleet_exporter_last_collect_success") == 1
    assert 0 <= support.value(m, "fleet_exporter_collect_duration_seconds") < 1


def test_it_shows_identity_in_fleet_gpu_info():
    nvml = two_gpus(virt=pynvml.NVML_GPU_VIRTUALIZATION_MODE_PASSTHROUGH)
    with served(nvml) as url:
        m = support.scrape(url)
    (info,) = [s for s in m["fleet_gpu_info"] if s.labels["UUID"] == UUID1]
    assert info.value == 1
    assert info.labels | {} == info.labels
    expected = {
        "gpu": "1",
        "serial": "1324021045678",
        "pci_bus_id": "00000000:2A:00.0",
        "pci_device_id": "0x20B210DE",
        "pci_subsystem_id": "0x147F10DE",
        "board_part_number": "692-2G506-0210-002",
        "architecture": "ampere",
        "virtualization_mode": "passthrough",
        "memory_total_bytes": str(81920 * 1024 * 1024),
        "sm_count": "108",
        "gpu_cores": "6912",
        "max_sm_clock_mhz": "1410",
        "max_mem_clock_mhz": "1593",
        "driver_version": "550.54.15",
        "vbios_version": "92.00.45.00.06",
        "modelName": "NVIDIA A100-SXM4-80GB",
    }
    assert {k: info.labels[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("mode", "label"),
    [
        (pynvml.NVML_GPU_VIRTUALIZATION_MODE_NONE, "none"),
        (pynvml.NVML_GPU_VIRTUALIZATION_MODE_PASSTHROUGH, "passthrough"),
        (pynvml.NVML_GPU_VIRTUALIZATION_MODE_VGPU, "vgpu"),
        (pynvml.NVML_GPU_VIRTUALIZATION_MODE_HOST_VGPU, "host_vgpu"),
        (pynvml.NVML_GPU_VIRTUALIZATION_MODE_HOST_VSGA, "host_vsga"),
    ],
)
def test_it_names_the_virtualization_mode(mode, label):
    source = NvmlSource(two_gpus(virt=mode), hostname="h")
    identity, _ = source.read().gpus[1]
    assert identity.virtualization_mode == label


def test_it_skips_metrics_the_gpu_does_not_support():
    consumer = dict(
        name="NVIDIA GeForce RTX 4090",
        serial=NOT_SUPPORTED,
        part=NOT_SUPPORTED,
        sm_count=NOT_SUPPORTED,
        cores=NOT_SUPPORTED,
        power_mw=NOT_SUPPORTED,
        energy_mj=NOT_SUPPORTED,
        ecc_sbe=NOT_SUPPORTED,
        ecc_dbe=NOT_SUPPORTED,
        replay=NOT_SUPPORTED,
        virt=NOT_SUPPORTED,
        xid_events=False,
    )
    nvml = two_gpus(**consumer)
    with served(nvml) as url:
        m = support.scrape(url)
        calls_after_first = nvml.calls["nvmlDeviceGetSerial"]
        support.scrape(url)
    (info,) = [s for s in m["fleet_gpu_info"] if s.labels["UUID"] == UUID1]
    for label in ("serial", "board_part_number", "sm_count", "virtualization_mode"):
        assert info.labels[label] == ""
    for name in (
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "DCGM_FI_DEV_XID_ERRORS",
        "fleet_gpu_xid_errors",
    ):
        assert [s.labels["UUID"] for s in m[name]] == [UUID0], name
    assert support.value(m, "DCGM_FI_DEV_GPU_UTIL", UUID=UUID1) == 93
    assert support.value(m, "fleet_exporter_last_collect_success") == 1
    # An unsupported metric is not asked again on every scrape.
    assert nvml.calls["nvmlDeviceGetSerial"] == calls_after_first


@pytest.mark.parametrize(
    ("cores", "capability", "sm_count"),
    [
        (16896, (9, 0), "132"),  # H100 SXM5: what a whole H100 gave on 2026-11-24 (nvmlDeviceGetAttributes refused)
        (6912, (8, 0), "108"),  # A100: 64 cores per SM
        (16384, (8, 9), "128"),  # RTX 4090
        (NOT_SUPPORTED, (9, 0), ""),  # no core count: no SM count, never a guess
        (16896, NOT_SUPPORTED, ""),
        (16896, (13, 0), ""),  # a compute capability not in the table
        (16900, (9, 0), ""),  # not a whole number of SMs
    ],
)
def test_a_whole_gpu_gets_its_sm_count_from_cores_per_sm(cores, capability, sm_count):
    nvml = two_gpus(sm_count=NOT_SUPPORTED, cores=cores, capability=capability)
    identity, _ = NvmlSource(nvml, hostname="h").read().gpus[1]
    assert identity.sm_count == sm_count


def test_nvml_s_own_sm_count_wins_where_it_answers():
    nvml = two_gpus(sm_count=98, cores=16896, capability=(9, 0))  # a MIG-sized answer
    identity, _ = NvmlSource(nvml, hostname="h").read().gpus[1]
    assert identity.sm_count == "98"
    assert nvml.calls["nvmlDeviceGetCudaComputeCapability"] == 0


def test_it_reports_a_gpu_that_fell_off_the_bus_as_lost():
    nvml = two_gpus()
    with served(nvml) as url:
        support.scrape(url)
        nvml.gpus[1].fail_with = pynvml.NVML_ERROR_GPU_IS_LOST
        m = support.scrape(url)
    assert support.value(m, "fleet_gpu_lost", UUID=UUID1, gpu="1") == 1
    (lost,) = m["fleet_gpu_lost"]
    assert lost.labels["pci_bus_id"] == "00000000:2A:00.0"
    assert [s.labels["UUID"] for s in m["DCGM_FI_DEV_GPU_UTIL"]] == [UUID0]
    assert [s.labels["UUID"] for s in m["fleet_gpu_info"]] == [UUID0]
    assert support.value(m, "fleet_exporter_last_collect_success") == 1


def test_a_gpu_lost_before_the_first_scrape_is_still_counted():
    nvml = two_gpus(fail_with=pynvml.NVML_ERROR_GPU_IS_LOST)
    with served(nvml) as url:
        m = support.scrape(url)
    assert support.value(m, "fleet_gpu_lost", gpu="1", UUID="") == 1


@pytest.mark.parametrize(
    "error", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND]
)
def test_an_init_failure_serves_collect_success_zero_and_recovers_later(error):
    nvml = two_gpus()
    nvml.init_error = error
    with served(nvml) as url:
        m = support.scrape(url)
        assert support.value(m, "fleet_exporter_last_collect_success") == 0
        assert "DCGM_FI_DEV_GPU_UTIL" not in m
        m = support.scrape(url)
        assert support.value(m, "fleet_exporter_last_collect_success") == 0
        assert nvml.calls["nvmlInit"] == 2  # retried on every scrape
        nvml.init_error = None  # the driver is loaded
        m = support.scrape(url)
    assert support.value(m, "fleet_exporter_last_collect_success") == 1
    assert len(m["DCGM_FI_DEV_GPU_UTIL"]) == 2


def test_a_driver_lost_mid_run_fails_the_scrape_and_reinitialises():
    nvml = two_gpus()
    with served(nvml) as url:
        assert support.value(support.scrape(url), "fleet_exporter_last_collect_success") == 1
        nvml.count_error = pynvml.NVML_ERROR_UNINITIALIZED
        assert support.value(support.scrape(url), "fleet_exporter_last_collect_success") == 0
        nvml.count_error = None
        m = support.scrape(url)
    assert support.value(m, "fleet_exporter_last_collect_success") == 1
    assert nvml.calls["nvmlInit"] == 2


def test_it_counts_xid_errors_from_nvml_events_with_the_last_code_and_time():
    nvml = two_gpus()
    clock = Clock(1_790_000_000.0)
    with served(nvml, clock=clock) as url:
        m = support.scrape(url)
        assert support.value(m, "fleet_gpu_xid_errors_total", UUID=UUID1) == 0
        nvml.xid(1, 79)
        clock.t += 15
        m = support.scrape(url)
        assert support.value(m, "fleet_gpu_xid_errors_total", UUID=UUID1, gpu="1") == 1
        assert support.value(m, "DCGM_FI_DEV_XID_ERRORS", UUID=UUID1) == 79
        assert support.value(m, "fleet_gpu_xid_last_timestamp_seconds", UUID=UUID1) == clock.t
        assert support.value(m, "fleet_gpu_xid_errors_total", UUID=UUID0) == 0
        nvml.xid(1, 13)
        nvml.xid(1, 48)
        clock.t += 15
        m = support.scrape(url)
    assert support.value(m, "fleet_gpu_xid_errors_total", UUID=UUID1) == 3
    assert support.value(m, "DCGM_FI_DEV_XID_ERRORS", UUID=UUID1) == 48
    assert support.value(m, "fleet_gpu_xid_last_timestamp_seconds", UUID=UUID1) == clock.t


def test_two_scrapes_in_quick_succession_read_nvml_once():
    nvml = two_gpus()
    now = Clock(100.0)
    collector = GpuCollector(NvmlSource(nvml, hostname="h"), cache_seconds=1.0, clock=now)
    with support.serve(support.registry_of(collector)) as url:
        first = support.fetch(url)
        second = support.fetch(url)
        assert first == second
        assert nvml.calls["nvmlDeviceGetCount"] == 2  # init's event registration + 1 read
        now.t += 1.0
        support.fetch(url)
    assert nvml.calls["nvmlDeviceGetCount"] == 3


def test_a_failure_right_after_init_is_retried_from_scratch():
    nvml = two_gpus()
    nvml.count_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    with served(nvml) as url:
        assert support.value(support.scrape(url), "fleet_exporter_last_collect_success") == 0
        assert nvml.calls["nvmlShutdown"] == 1
        nvml.count_error = None
        m = support.scrape(url)
    assert support.value(m, "fleet_exporter_last_collect_success") == 1
    assert nvml.calls["nvmlInit"] == 2
