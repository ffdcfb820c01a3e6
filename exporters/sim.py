"""A simulated fleet of GPU hosts, deterministic from a seed.

The same seed, host id and time always give the same output, in any process
(hashes are splitmix64 over blake2b digests, never Python's salted
``hash()``). One :class:`SimFleet` serves thousands of hosts cheaply:

- :meth:`SimFleet.reading` / :meth:`SimFleet.families` give the data and the
  client_python metric families (what the exporter's collector yields);
- :meth:`SimFleet.render` gives the Prometheus text from a per-host template
  with the values substituted; it parses (and is byte-for-byte) the same as
  ``generate_latest`` over :meth:`SimFleet.families`;
- :meth:`SimFleet.is_up` says whether a (flapping) host is reachable at t.

Profiles (see docs/exporter.md): healthy, flapping, gpu_lost, unsupported,
virtualized, cloned_uuid, spec_mismatch, cloned_telemetry; and the cheaters at
the proof of GPU (PROOF_PROFILES), whose telemetry is a healthy host's:
proof_garbage, proof_slow, proof_one_for_many, proof_silent.
:meth:`SimFleet.prover` gives a host's prover (exporters/prover.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters import metrics
from exporters.reading import GpuIdentity, GpuTelemetry, HostReading, LostGpu

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from prometheus_client.metrics_core import Metric

    from exporters.prover import SimProver

PROFILES = (
    "healthy",
    "flapping",
    "gpu_lost",
    "unsupported",
    "virtualized",
    "cloned_uuid",
    "spec_mismatch",
    "cloned_telemetry",
)
# Cheaters at the proof of GPU (docs/proof.md): healthy telemetry, and
# proof_garbage commits random numbers, proof_slow is really a Tesla T4,
# proof_one_for_many has one real GPU for all it claims, proof_silent never
# answers a challenge. Kept apart from PROFILES, the profiles whose
# telemetry shows something.
PROOF_PROFILES = ("proof_garbage", "proof_slow", "proof_one_for_many", "proof_silent")
ALL_PROFILES = PROFILES + PROOF_PROFILES

# Times before this are clamped: the simulated driver was loaded at this
# instant (2023-11-14), so energy counters start here and only grow.
SIM_EPOCH = 1_700_000_000.0

# Utilisation and power wander smoothly between random points this far
# apart, which looks like real jobs, not white noise, at a 15 s interval.
WANDER_PERIOD_S = 60.0

# A flapping host is judged per window of this length: down for the whole
# window with probability FLAP_DOWN_FRACTION. Windows of 5 min are longer
# than the default grace (45 s), so the collector sees it go down and up.
FLAP_PERIOD_S = 300.0
FLAP_DOWN_FRACTION = 0.3

DRIVER_VERSION = "550.127.05"

# PCI buses of the 8 GPUs in a typical HGX board, in NVML index order.
HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)

MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class GpuModel:
    """A GPU model as NVML reports it on a typical board."""

    name: str
    memory_mib: int
    sm_count: int
    gpu_cores: int
    max_sm_clock_mhz: int
    max_mem_clock_mhz: int
    idle_sm_clock_mhz: int
    idle_mem_clock_mhz: int
    architecture: str
    tdp_w: float
    idle_w: float
    pci_device_id: str
    pci_subsystem_id: str
    board_part_number: str
    vbios_version: str


MODELS: dict[str, GpuModel] = {
    m.name: m
    for m in (
        GpuModel(
            "NVIDIA A100-SXM4-80GB", 81920, 108, 6912, 1410, 1593, 210, 1593, "ampere",
            400.0, 62.0, "0x20B210DE", "0x147F10DE", "692-2G506-0210-002", "92.00.45.00.06",
        ),
        GpuModel(
            "NVIDIA H100 80GB HBM3", 81559, 132, 16896, 1980, 2619, 345, 2619, "hopper",
            700.0, 72.0, "0x233010DE", "0x16C110DE", "692-2G520-0200-000", "96.00.74.00.0E",
        ),
        GpuModel(
            "NVIDIA GeForce RTX 4090", 24564, 128, 16384, 3120, 10501, 210, 405, "ada",
            450.0, 21.0, "0x268410DE", "0x16F310DE", "", "95.02.18.80.5F",
        ),
        GpuModel(
            "NVIDIA GeForce RTX 3090", 24576, 82, 10496, 2100, 9751, 210, 405, "ampere",
            350.0, 24.0, "0x220410DE", "0x147D10DE", "", "94.02.42.00.A9",
        ),
        GpuModel(
            "NVIDIA L40S", 46068, 142, 18176, 2520, 9001, 210, 405, "ada",
            350.0, 33.0, "0x26B910DE", "0x185110DE", "900-2G133-0080-000", "95.02.66.00.02",
        ),
    )
}

# What a spec_mismatch host really is: an RTX 4090 whose name claims the
# host spec's model (default an H100), so memory, SMs and clocks disagree.
SPEC_MISMATCH_HARDWARE = "NVIDIA GeForce RTX 4090"

DEFAULT_MODEL = "NVIDIA A100-SXM4-80GB"
PROFILE_DEFAULT_MODEL = {
    "unsupported": "NVIDIA GeForce RTX 3090",
    "spec_mismatch": "NVIDIA H100 80GB HBM3",
}


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One simulated host. ``model`` None picks the profile's default."""

    host_id: str
    profile: str = "healthy"
    n_gpus: int = 8
    model: str | None = None
    hired: bool = False

    def __post_init__(self) -> None:
        if self.profile not in ALL_PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; known: {', '.join(ALL_PROFILES)}")
        if self.n_gpus < 1:
            raise ValueError(f"n_gpus must be >= 1, got {self.n_gpus}")
        if self.model is not None and self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {', '.join(MODELS)}")


def digest(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash."""
    x &= MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def _unit(key: int, n: int) -> float:
    """A uniform number in [0, 1) for (key, n)."""
    return _mix(key + n * 0x9E3779B97F4A7C15) / 18446744073709551616.0


def _wander(key: int, t: float) -> float:
    """A smooth value in [0, 1) that drifts over WANDER_PERIOD_S."""
    x = t / WANDER_PERIOD_S
    k = math.floor(x)
    f = x - k
    f = f * f * (3.0 - 2.0 * f)
    a = _unit(key, k)
    return a + (_unit(key, k + 1) - a) * f


@dataclass(slots=True)
class _Gpu:
    identity: GpuIdentity
    key: int  # noise key for telemetry (shared by cloned_telemetry GPUs)
    hw: GpuModel
    energy0: float
    replay_rate: float  # PCIe replays per second (0 for most GPUs)


@dataclass(slots=True)
class _Host:
    spec: HostSpec
    key: int
    gpus: list[_Gpu]
    lost: list[LostGpu]
    unsupported: bool
    template: metrics.Template | None = None
    mean_power: list[float] = field(default_factory=list)


class SimFleet:
    """Simulated hosts, addressed by index or host id."""

    def __init__(self, seed: int, hosts: Sequence[HostSpec]) -> None:
        self.seed = int(seed)
        self.hosts: tuple[HostSpec, ...] = tuple(hosts)
        self._index: dict[str, int] = {}
        for i, spec in enumerate(self.hosts):
            if spec.host_id in self._index:
                raise ValueError(f"duplicate host_id {spec.host_id!r}")
            self._index[spec.host_id] = i
        self._intern: dict[str, str] = {}
        self._built: list[_Host | None] = [None] * len(self.hosts)

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_scenario(
        cls, seed: int, scenario: str | Path | Sequence[dict[str, Any]]
    ) -> SimFleet:
        """Build a fleet from a scenario: a JSON file path or its parsed list.

        Each entry is ``{"profile", "count", "gpus", "model", "hired_fraction"}``
        (all optional but ``profile``; defaults 1 host, 8 GPUs, the profile's
        model, 0.0). Host ids are ``<profile>-<n>`` with n the host's position
        in the whole fleet (5 digits). ``round(count * hired_fraction)`` hosts
        of each entry are hired, chosen by the seed.
        """
        if isinstance(scenario, (str, Path)):
            scenario = json.loads(Path(scenario).read_text())
        if not isinstance(scenario, list):
            raise ValueError("a scenario is a JSON list of host groups")
        hosts: list[HostSpec] = []
        for g, group in enumerate(scenario):
            unknown = set(group) - {"profile", "count", "gpus", "model", "hired_fraction"}
            if unknown:
                raise ValueError(f"scenario entry {g}: unknown keys {sorted(unknown)}")
            profile = group.get("profile", "healthy")
            count = int(group.get("count", 1))
            fraction = float(group.get("hired_fraction", 0.0))
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"scenario entry {g}: hired_fraction must be in [0, 1]")
            n_hired = round(count * fraction)
            order = sorted(range(count), key=lambda j: digest(seed, "hired", g, j))
            hired = set(order[:n_hired])
            for j in range(count):
                hosts.append(
                    HostSpec(
                        host_id=f"{profile}-{len(hosts):05d}",
                        profile=profile,
                        n_gpus=int(group.get("gpus", 8)),
                        model=group.get("model"),
                        hired=j in hired,
                    )
                )
        return cls(seed, hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def index(self, host: int | str) -> int:
        """Return the index of a host given by index or host id."""
        if isinstance(host, str):
            return self._index[host]
        if not 0 <= host < len(self.hosts):
            raise IndexError(host)
        return host

    def _host(self, host: int | str) -> _Host:
        i = self.index(host)
        built = self._built[i]
        if built is None:
            built = self._build(i)
            self._built[i] = built
        return built

    def _identity(self, i: int, g: int) -> tuple[str, str]:
        spec = self.hosts[i]
        h = digest(self.seed, "gpu", spec.host_id, g)
        hexs = f"{_mix(h):016x}{_mix(h + 1):016x}"
        uuid = f"GPU-{hexs[:8]}-{hexs[8:12]}-{hexs[12:16]}-{hexs[16:20]}-{hexs[20:32]}"
        serial = f"132{_mix(h + 2) % 10**10:010d}"
        return uuid, serial

    def _donor(self, i: int) -> tuple[int, int] | None:
        """The (host, gpu) whose UUID a cloned_uuid host copies."""
        for j, other in enumerate(self.hosts):
            if j != i and other.profile != "cloned_uuid":
                return j, 0
        for j in range(len(self.hosts)):
            if j != i:
                return j, 0
        return None

    def _build(self, i: int) -> _Host:
        spec = self.hosts[i]
        profile = spec.profile
        key = digest(self.seed, "host", spec.host_id)
        name = spec.model or PROFILE_DEFAULT_MODEL.get(profile, DEFAULT_MODEL)
        hw = MODELS[SPEC_MISMATCH_HARDWARE] if profile == "spec_mismatch" else MODELS[name]
        unsupported = profile == "unsupported"
        gpus: list[_Gpu] = []
        lost: list[LostGpu] = []
        for g in range(spec.n_gpus):
            uuid, serial = self._identity(i, g)
            if profile == "cloned_uuid" and g == 0:
                donor = self._donor(i)
                if donor is not None:
                    uuid, serial = self._identity(*donor)
            if profile == "cloned_uuid" and g == 1 and self._donor(i) is None:
                uuid, serial = self._identity(i, 0)  # a lone host clones itself
            bus = HGX_BUSES[g] if g < len(HGX_BUSES) else (0x10 + 0x11 * g) & 0xFF
            pci_bus_id = f"00000000:{bus:02X}:00.0"
            if profile == "gpu_lost" and g == spec.n_gpus - 1:
                lost.append(LostGpu(index=g, uuid=uuid, pci_bus_id=pci_bus_id))
                continue
            identity = GpuIdentity(
                index=g,
                uuid=uuid,
                model_name=name,
                pci_bus_id=pci_bus_id,
                device=f"nvidia{g}",
                serial="" if unsupported else serial,
                pci_device_id=hw.pci_device_id,
                pci_subsystem_id=hw.pci_subsystem_id,
                board_part_number="" if unsupported else hw.board_part_number,
                architecture=hw.architecture,
                virtualization_mode="vgpu" if profile == "virtualized" else "none",
                memory_total_bytes=str(hw.memory_mib * 1024 * 1024),
                sm_count="" if unsupported else str(hw.sm_count),
                gpu_cores=str(hw.gpu_cores),
                max_sm_clock_mhz=str(hw.max_sm_clock_mhz),
                max_mem_clock_mhz=str(hw.max_mem_clock_mhz),
                driver_version=DRIVER_VERSION,
                vbios_version=hw.vbios_version,
            )
            gkey = digest(self.seed, "tele", spec.host_id, 0 if profile == "cloned_telemetry" else g)
            energy0 = float(_mix(gkey + 7) % 10**9)  # mJ used before SIM_EPOCH
            replay_rate = 1e-4 if _unit(gkey, 11) < 0.05 else 0.0
            gpus.append(_Gpu(identity, gkey, hw, energy0, replay_rate))
        host = _Host(spec, key, gpus, lost, unsupported)
        host.mean_power = [self._mean_power(host, gpu) for gpu in gpus]
        return host

    def _mean_power(self, host: _Host, gpu: _Gpu) -> float:
        hw = gpu.hw
        if host.spec.hired:
            # mean util 0.85, mean power factor 0.875
            return hw.idle_w + (hw.tdp_w - hw.idle_w) * 0.85 * 0.875
        return hw.idle_w + 2.5

    # -- reading ---------------------------------------------------------------

    def is_up(self, host: int | str, t: float) -> bool:
        """Whether the host answers at time t (only flapping hosts go down)."""
        spec = self.hosts[self.index(host)]
        if spec.profile != "flapping":
            return True
        window = math.floor(t / FLAP_PERIOD_S)
        return _unit(digest(self.seed, "flap", spec.host_id), window) >= FLAP_DOWN_FRACTION

    def hostname(self, host: int | str) -> str:
        """The Hostname label of a host (its host id)."""
        return self.hosts[self.index(host)].host_id

    def reading(self, host: int | str, t: float) -> HostReading:
        """Return what the host's GPUs report at time t."""
        h = self._host(host)
        hired = h.spec.hired
        since = max(t - SIM_EPOCH, 0.0)
        gpus: list[tuple[GpuIdentity, GpuTelemetry]] = []
        for gpu, mean_power in zip(h.gpus, h.mean_power):
            hw = gpu.hw
            k = gpu.key
            w = _wander(k, t)
            if hired:
                util = 70.0 + round(30.0 * w)
                mem_util = 30.0 + round(50.0 * _wander(k + 1, t))
                used = round(hw.memory_mib * (0.6 + 0.35 * _wander(k + 2, t)))
                power = hw.idle_w + (hw.tdp_w - hw.idle_w) * util / 100.0 * (
                    0.75 + 0.25 * _wander(k + 3, t)
                )
                sm = round(hw.max_sm_clock_mhz * (0.85 + 0.15 * _wander(k + 4, t)))
                mem_clock = float(hw.max_mem_clock_mhz)
                temp = 55.0 + round(25.0 * (power - hw.idle_w) / (hw.tdp_w - hw.idle_w))
            else:
                util = float(round(5.0 * w))
                mem_util = float(round(2.0 * _wander(k + 1, t)))
                used = 4 + round(500 * _wander(k + 2, t))
                power = hw.idle_w + 5.0 * _wander(k + 3, t)
                sm = hw.idle_sm_clock_mhz + round(30 * _wander(k + 4, t))
                mem_clock = float(hw.idle_mem_clock_mhz)
                temp = 30.0 + round(8.0 * _wander(k + 5, t))
            tele = GpuTelemetry(
                gpu_util=float(util),
                mem_copy_util=float(mem_util),
                fb_used_mib=float(used),
                fb_free_mib=float(hw.memory_mib - used),
                temp_c=temp,
                sm_clock_mhz=float(sm),
                mem_clock_mhz=mem_clock,
                pcie_replay=float(math.floor(since * gpu.replay_rate)),
                xid_last_code=0.0,
                xid_count=0.0,
                xid_last_timestamp=0.0,
            )
            if not h.unsupported:
                tele.power_w = round(power, 3)  # NVML reports whole mW
                tele.energy_mj = float(math.floor(gpu.energy0 + mean_power * since * 1000.0))
                tele.ecc_sbe_vol_total = 0.0
                tele.ecc_dbe_vol_total = 0.0
            gpus.append((gpu.identity, tele))
        return HostReading(hostname=h.spec.host_id, gpus=gpus, lost=list(h.lost))

    def collect_duration(self, host: int | str, t: float) -> float:
        """A plausible, deterministic collect duration for the health metric."""
        h = self._host(host)
        return round(0.0005 * len(h.gpus) * (1.0 + _wander(h.key, t)), 6)

    def families(self, host: int | str, t: float) -> list[Metric]:
        """Return the metric families the host's exporter would yield at t."""
        return metrics.families(
            self.reading(host, t), success=True, duration=self.collect_duration(host, t)
        )

    def render(self, host: int | str, t: float) -> bytes:
        """Return the host's /metrics body at t, fast (a per-host template).

        Byte-for-byte what ``generate_latest`` gives for :meth:`families`.
        """
        h = self._host(host)
        reading = self.reading(host, t)
        duration = self.collect_duration(host, t)
        if h.template is None:
            fams = metrics.families(reading, success=True, duration=duration)
            h.template = metrics.Template(fams, intern=self._intern)
        return h.template.render(metrics.values(reading, success=True, duration=duration))

    def proof_hardware(self, host: int | str) -> str:
        """The model a host's GPUs really are, as the GPU model table names it: what its proofs run at."""
        spec = self.hosts[self.index(host)]
        if spec.profile == "proof_slow":
            from exporters.prover import PROOF_SLOW_HARDWARE

            return PROOF_SLOW_HARDWARE
        if spec.profile == "spec_mismatch":
            return SPEC_MISMATCH_HARDWARE
        return spec.model or PROFILE_DEFAULT_MODEL.get(spec.profile, DEFAULT_MODEL)

    def prover(self, host: int | str) -> SimProver:
        """The host's prover: NumPy at its real GPUs' speed, cheating as its profile says."""
        from exporters.prover import SimProver

        i = self.index(host)
        profile = self.hosts[i].profile
        cheat = {"proof_garbage": "garbage", "proof_one_for_many": "one_for_many",
                 "proof_silent": "silent"}.get(profile)
        return SimProver(true_model=self.proof_hardware(i), cheat=cheat, seed=digest(self.seed, "proof", i))

    def source(self, host: int | str, *, clock: Callable[[], float] = time.time) -> SimSource:
        """Return a source for :class:`exporters.gpu_collector.GpuCollector`."""
        return SimSource(self, self.index(host), clock=clock)

    def collector(self, host: int | str, *, clock: Callable[[], float] = time.time) -> SimCollector:
        """Return a client_python collector yielding :meth:`families` at clock()."""
        return SimCollector(self, self.index(host), clock=clock)


class SimSource:
    """One simulated host as a data source for GpuCollector."""

    def __init__(self, fleet: SimFleet, host: int, *, clock: Callable[[], float] = time.time):
        self.fleet = fleet
        self.host = host
        self._clock = clock

    def read(self) -> HostReading:
        t = self._clock()
        if not self.fleet.is_up(self.host, t):
            # The exporter of a down host would not answer at all; when run
            # as a real exporter, show it as a failed collect instead.
            raise RuntimeError(f"simulated host {self.fleet.hostname(self.host)} is down")
        return self.fleet.reading(self.host, t)


class SimCollector:
    """A client_python collector yielding one simulated host's families."""

    def __init__(self, fleet: SimFleet, host: int, *, clock: Callable[[], float] = time.time):
        self.fleet = fleet
        self.host = host
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        return self.fleet.families(self.host, self._clock())
