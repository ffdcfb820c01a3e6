"""What a backend reads from one host: GPU identities, telemetry, lost GPUs.

Every backend (NVML, simulated, Apple) produces a :class:`HostReading`; the
metric names and labels are decided once, in :mod:`exporters.metrics`, so a
simulated host and a real one are exposed identically.

A field that the device does not support is ``None`` (telemetry: the series
is left out) or ``""`` (identity: the label is an empty string), never a
made-up zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Virtualisation modes as NVML numbers them (nvmlGpuVirtualizationMode_t), to
# the strings fleet_gpu_info carries. Integrity checks flag "vgpu" and
# "host_vgpu"; "passthrough" and "none" are fine (DESIGN.md, Integrity).
VIRTUALIZATION_MODES: dict[int, str] = {
    0: "none",
    1: "passthrough",
    2: "vgpu",
    3: "host_vgpu",
    4: "host_vsga",
}


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """Static facts about one GPU; strings, "" where unsupported."""

    index: int
    uuid: str
    model_name: str
    pci_bus_id: str = ""
    # dcgm-exporter's `device` label, e.g. "nvidia0" (from the minor number).
    device: str = ""
    serial: str = ""
    pci_device_id: str = ""
    pci_subsystem_id: str = ""
    board_part_number: str = ""
    architecture: str = ""
    virtualization_mode: str = ""
    memory_total_bytes: str = ""
    sm_count: str = ""
    gpu_cores: str = ""
    max_sm_clock_mhz: str = ""
    max_mem_clock_mhz: str = ""
    driver_version: str = ""
    vbios_version: str = ""


@dataclass(slots=True)
class GpuTelemetry:
    """One reading of one GPU; ``None`` where the device does not support it."""

    gpu_util: float | None = None  # percent
    mem_copy_util: float | None = None  # percent
    fb_used_mib: float | None = None
    fb_free_mib: float | None = None
    power_w: float | None = None
    energy_mj: float | None = None  # since driver load
    temp_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    pcie_replay: float | None = None
    ecc_sbe_vol_total: float | None = None
    ecc_dbe_vol_total: float | None = None
    # XID critical errors seen since the exporter started (NVML events).
    xid_last_code: float | None = None
    xid_count: float | None = None
    xid_last_timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class LostGpu:
    """A GPU that fell off the bus (NVML_ERROR_GPU_IS_LOST)."""

    index: int
    uuid: str = ""
    pci_bus_id: str = ""


@dataclass(slots=True)
class HostReading:
    """Everything one collect saw on one host."""

    hostname: str
    gpus: list[tuple[GpuIdentity, GpuTelemetry]] = field(default_factory=list)
    lost: list[LostGpu] = field(default_factory=list)
