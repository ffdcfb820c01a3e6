"""The simulated backend, end to end over real HTTP, parsed with prometheus_client."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from exporters.gpu_collector import GpuCollector
from exporters.sim import MODELS, PROFILES, HostSpec, SimFleet
from tests.fixtures.exporter import support

FIXTURES = Path(__file__).parent / "fixtures" / "exporter"
T = 1_795_000_000.0  # 2026-11-19, a fixed instant
DCGM_LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"}
REQUIRED = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_XID_ERRORS",
)


def one_of_each(seed: int = 7) -> SimFleet:
    return SimFleet(
        seed,
        [HostSpec(f"host-{p}", p, n_gpus=4, hired=(i % 2 == 0)) for i, p in enumerate(PROFILES)],
    )


def scrape_host(fleet: SimFleet, host: str, t: float = T) -> dict[str, list]:
    collector = GpuCollector(fleet.source(host, clock=lambda: t), cache_seconds=0)
    with support.serve(support.registry_of(collector)) as url:
        return support.scrape(url)


def uuids(m: dict[str, list]) -> set[str]:
    return {s.labels["UUID"] for s in m["fleet_gpu_info"]}


class _Families:
    def __init__(self, fams):
        self._fams = fams

    def collect(self):
        return self._fams


def test_a_simulated_host_serves_every_gpu_metric_with_dcgm_labels():
    fleet = SimFleet(1, [HostSpec("rack-a-01", "healthy", n_gpus=8, hired=True)])
    m = scrape_host(fleet, "rack-a-01")
    for name in REQUIRED:
        assert len(m[name]) == 8, name
        for sample in m[name]:
            assert set(sample.labels) == DCGM_LABELS
            assert sample.labels["Hostname"] == "rack-a-01"
            assert sample.labels["modelName"] == "NVIDIA A100-SXM4-80GB"
    assert {s.labels["device"] for s in m["DCGM_FI_DEV_GPU_UTIL"]} == {
        f"nvidia{i}" for i in range(8)
    }
    assert len(uuids(m)) == 8
    assert support.value(m, "fleet_exporter_last_collect_success") == 1
    assert len(m["fleet_gpu_xid_errors"]) == 8
    assert "fleet_gpu_lost" not in m


def test_memory_used_and_free_add_up_to_the_model_memory():
    fleet = SimFleet(3, [HostSpec("h", "healthy", n_gpus=2, model="NVIDIA L40S", hired=True)])
    m = scrape_host(fleet, "h")
    for gpu in ("0", "1"):
        used = support.value(m, "DCGM_FI_DEV_FB_USED", gpu=gpu)
        free = support.value(m, "DCGM_FI_DEV_FB_FREE", gpu=gpu)
        assert used + free == MODELS["NVIDIA L40S"].memory_mib


def test_hired_gpus_are_busy_and_idle_gpus_are_not():
    fleet = SimFleet(
        5, [HostSpec("busy", n_gpus=8, hired=True), HostSpec("idle", n_gpus=8, hired=False)]
    )
    for t in (T, T + 15, T + 3600):
        busy = fleet.reading("busy", t)
        idle = fleet.reading("idle", t)
        for (_, b), (_, i) in zip(busy.gpus, idle.gpus):
            assert 70 <= b.gpu_util <= 100
            assert 0 <= i.gpu_util <= 5
            assert b.power_w > 200 > i.power_w


def test_the_virtualized_profile_reports_vgpu_mode():
    m = scrape_host(one_of_each(), "host-virtualized")
    assert {s.labels["virtualization_mode"] for s in m["fleet_gpu_info"]} == {"vgpu"}
    healthy = scrape_host(one_of_each(), "host-healthy")
    assert {s.labels["virtualization_mode"] for s in healthy["fleet_gpu_info"]} == {"none"}


def test_the_gpu_lost_profile_reports_one_lost_gpu():
    m = scrape_host(one_of_each(), "host-gpu_lost")
    (lost,) = m["fleet_gpu_lost"]
    assert lost.value == 1
    assert lost.labels["gpu"] == "3"
    assert lost.labels["UUID"].startswith("GPU-")
    assert lost.labels["pci_bus_id"]
    assert lost.labels["UUID"] not in uuids(m)
    assert len(m["DCGM_FI_DEV_GPU_UTIL"]) == 3
    assert support.value(m, "fleet_exporter_last_collect_success") == 1


def test_the_unsupported_profile_leaves_out_serial_power_and_ecc():
    m = scrape_host(one_of_each(), "host-unsupported")
    for info in m["fleet_gpu_info"]:
        assert info.labels["serial"] == ""
        assert info.labels["board_part_number"] == ""
        assert info.labels["modelName"] == "NVIDIA GeForce RTX 3090"
    for name in (
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    ):
        assert name not in m
    assert len(m["DCGM_FI_DEV_GPU_UTIL"]) == 4


def test_the_cloned_uuid_profile_shares_a_uuid_with_another_host():
    fleet = one_of_each()
    clone = scrape_host(fleet, "host-cloned_uuid")
    others = {
        spec.host_id: uuids(scrape_host(fleet, spec.host_id))
        for spec in fleet.hosts
        if spec.host_id != "host-cloned_uuid" and spec.profile != "gpu_lost"
    }
    shared = {host for host, ids in others.items() if ids & uuids(clone)}
    assert len(shared) == 1
    assert len(uuids(clone)) == 4  # still four distinct GPUs on the host itself


def test_a_lone_cloned_uuid_host_repeats_a_uuid_of_its_own():
    fleet = SimFleet(1, [HostSpec("alone", "cloned_uuid", n_gpus=2)])
    reading = fleet.reading("alone", T)
    assert reading.gpus[0][0].uuid == reading.gpus[1][0].uuid


def test_the_spec_mismatch_profile_claims_an_h100_with_24_gib():
    m = scrape_host(one_of_each(), "host-spec_mismatch")
    for info in m["fleet_gpu_info"]:
        assert info.labels["modelName"] == "NVIDIA H100 80GB HBM3"
        assert int(info.labels["memory_total_bytes"]) == 24564 * 1024 * 1024
    for sample in m["DCGM_FI_DEV_FB_FREE"]:
        assert sample.value < 25 * 1024


def test_the_cloned_telemetry_profile_repeats_one_series_under_different_uuids():
    fleet = one_of_each()
    for t in (T, T + 15, T + 30):
        m = fleet.reading("host-cloned_telemetry", t)
        series = {(t.gpu_util, t.power_w, t.fb_used_mib, t.temp_c) for _, t in m.gpus}
        assert len(series) == 1
        assert len({identity.uuid for identity, _ in m.gpus}) == 4


def test_a_flapping_host_is_down_for_some_periods_and_fails_its_scrape_then():
    fleet = one_of_each()
    day = [T + 60 * k for k in range(24 * 60)]
    up = [fleet.is_up("host-flapping", t) for t in day]
    assert 0.1 < up.count(False) / len(up) < 0.5
    assert all(fleet.is_up("host-healthy", t) for t in day)
    down_at = day[up.index(False)]
    m = scrape_host(fleet, "host-flapping", t=down_at)
    assert support.value(m, "fleet_exporter_last_collect_success") == 0
    assert "DCGM_FI_DEV_GPU_UTIL" not in m


def test_the_same_seed_gives_the_same_output_and_another_seed_does_not():
    a, b, c = one_of_each(7), one_of_each(7), one_of_each(8)
    for i in range(len(a)):
        assert a.render(i, T) == b.render(i, T)
        assert a.render(i, T) != c.render(i, T)
    assert a.render(0, T) != a.render(0, T + 120)


def test_the_output_does_not_depend_on_the_process():
    code = (
        "import hashlib, sys; from exporters.sim import SimFleet; "
        f"f = SimFleet.from_scenario(11, {str(FIXTURES / 'scenario.json')!r}); "
        f"print(hashlib.sha256(b''.join(f.render(i, {T}) for i in range(len(f)))).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    fleet = SimFleet.from_scenario(11, FIXTURES / "scenario.json")
    here = hashlib.sha256(b"".join(fleet.render(i, T) for i in range(len(fleet)))).hexdigest()
    assert out == here


def test_a_recorded_payload_is_reproduced_exactly():
    fleet = SimFleet(2026, [HostSpec("recorded-host", "healthy", n_gpus=2, hired=True)])
    recorded = (FIXTURES / "sim-seed2026-healthy-2gpu.prom").read_text()
    assert support.parse(fleet.render(0, T).decode()) == support.parse(recorded)


@pytest.mark.parametrize("profile", PROFILES)
def test_render_parses_the_same_as_the_collector_path(profile):
    fleet = SimFleet(9, [HostSpec("a", "healthy"), HostSpec("b", profile, hired=True)])
    for t in (T, T + 15.5, T + 86_400):
        fast = fleet.render("b", t)
        slow = generate_latest(_Families(fleet.families("b", t)))
        assert support.parse(fast.decode()) == support.parse(slow.decode())
        assert fast == slow
        via_collector = generate_latest(support.registry_of(fleet.collector("b", clock=lambda: t)))
        assert via_collector == slow


def test_energy_only_grows():
    fleet = SimFleet(4, [HostSpec("h", hired=True), HostSpec("i")])
    for host in ("h", "i"):
        last = [0.0] * 8
        for k in range(50):
            reading = fleet.reading(host, T + 15 * k)
            now = [t.energy_mj for _, t in reading.gpus]
            assert all(n >= p for n, p in zip(now, last))
            last = now


def test_a_scenario_file_composes_a_fleet():
    fleet = SimFleet.from_scenario(11, FIXTURES / "scenario.json")
    assert len(fleet) == 43
    assert len({spec.host_id for spec in fleet.hosts}) == 43
    a100 = [s for s in fleet.hosts if s.model == "NVIDIA A100-SXM4-80GB" and s.profile == "healthy"]
    assert sum(s.hired for s in a100) == 10
    assert {s.profile for s in fleet.hosts} == set(PROFILES)
    # The cloned host's UUID belongs to some other host of the fleet.
    owners: dict[str, set[str]] = {}
    for spec in fleet.hosts:
        for identity, _ in fleet.reading(spec.host_id, T).gpus:
            owners.setdefault(identity.uuid, set()).add(spec.host_id)
    assert [len(hosts) for hosts in owners.values()].count(2) == 1


def test_a_bad_scenario_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown profile"):
        SimFleet.from_scenario(1, [{"profile": "haunted"}])
    with pytest.raises(ValueError, match="unknown keys"):
        SimFleet.from_scenario(1, [{"profile": "healthy", "gpu": 3}])
    with pytest.raises(ValueError, match="unknown model"):
        SimFleet.from_scenario(1, [{"profile": "healthy", "model": "NVIDIA RTX 9999"}])
