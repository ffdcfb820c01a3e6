"""The mapping from exporter metric names and labels to fleetscope's GPU rows.

Three producers are accepted unchanged (see DESIGN.md, "Exporter metrics"):

* our own exporter: dcgm-exporter names plus ``fleet_gpu_info``,
  ``fleet_gpu_lost``, ``fleet_gpu_xid_errors_total`` and
  ``fleet_exporter_last_collect_success``;
* NVIDIA dcgm-exporter (``etc/default-counters.csv``): ``DCGM_FI_*`` gauges and
  counters labelled ``gpu``, ``UUID``, ``pci_bus_id``, ``device``,
  ``modelName``, ``Hostname``, ``DCGM_FI_DRIVER_VERSION``; FB in MiB, power in
  W, energy in mJ, clocks in MHz, utilisation in percent;
* utkuozdemir/nvidia_gpu_exporter: ``nvidia_smi_*`` gauges labelled ``uuid``.
  It rescales nvidia-smi units (``buildFQNameAndMultiplier`` in its
  ``internal/exporter/exporter.go``): ``[%]`` becomes ``_ratio`` (x 0.01),
  ``[MiB]`` becomes ``_bytes`` (x 1048576), ``[MHz]`` becomes ``_clock_hz``
  (x 1e6). It also lower-cases the UUID and strips its ``GPU-`` prefix, so we
  put the prefix back to key the GPU the way NVML and DCGM do.

Everything here depends only on a series' name and labels, never on its
value, which is what lets the parser cache the result per series text.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

# Columns of the wide row, in the order of the `gpu_samples` table.
SAMPLE_COLUMNS = (
    "gpu_uuid", "gpu_index", "gpu_util", "mem_copy_util", "fb_used_mib",
    "fb_free_mib", "power_w", "energy_mj", "temp_c", "sm_clock_mhz",
    "mem_clock_mhz", "pcie_replay", "ecc_sbe", "ecc_dbe", "xid_last", "lost",
)
(C_UUID, C_INDEX, C_GPU_UTIL, C_MEM_COPY_UTIL, C_FB_USED, C_FB_FREE, C_POWER,
 C_ENERGY, C_TEMP, C_SM_CLOCK, C_MEM_CLOCK, C_PCIE_REPLAY, C_ECC_SBE,
 C_ECC_DBE, C_XID_LAST, C_LOST) = range(len(SAMPLE_COLUMNS))
# bigint/int columns: stored as Python ints so COPY's int8 binary format works.
INT_COLUMNS = frozenset({C_PCIE_REPLAY, C_ECC_SBE, C_ECC_DBE, C_XID_LAST})
UTIL_COLUMNS = frozenset({C_GPU_UTIL, C_MEM_COPY_UTIL})

IDENTITY_FIELDS = (
    "uuid", "model", "serial", "pci_bus_id", "pci_device_id",
    "pci_subsystem_id", "board_part_number", "architecture",
    "virtualization_mode", "memory_total_bytes", "sm_count",
    "max_sm_clock_mhz", "max_mem_clock_mhz", "driver_version",
    "vbios_version",
)
_F = {name: i for i, name in enumerate(IDENTITY_FIELDS)}
# Identity fields that are numbers; label values are converted, values that
# do not convert are dropped (None), as an unsupported field is in NVML.
INT_IDENTITY_FIELDS = frozenset({_F["memory_total_bytes"], _F["sm_count"]})
FLOAT_IDENTITY_FIELDS = frozenset({_F["max_sm_clock_mhz"], _F["max_mem_clock_mhz"]})

# What a series contributes (Entry.kind).
K_IGNORE = 0        # value is validated by the parser but not stored
K_COLUMN = 1        # a column of the wide row
K_IDENTITY = 2      # a numeric identity field carried as a sample value
K_MAX_POWER = 3     # the card's maximum power limit, for the absurd_power check
K_LOST = 4          # fleet_gpu_lost: the GPU fell off the bus
K_EXPORTER_OK = 5   # exporter health gauge
K_XID_TS = 6        # nvidia_gpu_exporter: last-seen time per XID code
K_INFO = 7          # constant-1 info metric; its labels are the identity
K_REJECTED = 8      # a label value over the limit: the series is dropped

# Unit conversions applied to a value (Entry.transform).
T_NONE = 0
T_RATIO_TO_PCT = 1   # nvidia_gpu_exporter *_ratio
T_BYTES_TO_MIB = 2   # nvidia_gpu_exporter *_bytes
T_HZ_TO_MHZ = 3      # nvidia_gpu_exporter *_clock_hz
T_J_TO_MJ = 4        # nvidia_gpu_exporter energy in joules
T_MIB_TO_BYTES = 5   # DCGM_FI_DEV_FB_TOTAL into memory_total_bytes
T_HEX32 = 6          # nvidia-smi pci.device_id, exported as a number

# A target's GPU identities live as long as its parse cache (collector/parse.py,
# `_Gpus`), and most of their values are the same across a fleet (model,
# driver, vbios, memory size, clocks): one shared object each instead of one
# per GPU per target saves ~5 KB per 8-GPU target (docs/benchmarks-parse.md,
# 2026-11-24). Strings go through sys.intern, which forgets a string with its
# last user; numbers through a memo by label text, bounded here so that odd
# payloads cannot grow it (past the bound a number is simply not shared).
MAX_SHARED_NUMBERS = 4096
_NUMBERS: dict[tuple[int, str], int | float | None] = {}
# A serial number is one GPU's own: interning it would share nothing and only
# grow the interpreter's table of interned strings (~1 KB per 8-GPU target).
_UNSHARED_FIELDS = frozenset({_F["serial"]})

# Values that mean "not available" in nvidia-smi and NVML strings.
_NOT_AVAILABLE = frozenset({"", "[N/A]", "N/A", "[Not Supported]", "[Unknown Error]",
                            "[Insufficient Permissions]"})

_METRICS: dict[str, tuple[int, int, int]] = {
    # dcgm-exporter names: NVIDIA's exporter and our own.
    "DCGM_FI_DEV_GPU_UTIL": (K_COLUMN, C_GPU_UTIL, T_NONE),
    "DCGM_FI_DEV_MEM_COPY_UTIL": (K_COLUMN, C_MEM_COPY_UTIL, T_NONE),
    "DCGM_FI_DEV_FB_USED": (K_COLUMN, C_FB_USED, T_NONE),
    "DCGM_FI_DEV_FB_FREE": (K_COLUMN, C_FB_FREE, T_NONE),
    "DCGM_FI_DEV_POWER_USAGE": (K_COLUMN, C_POWER, T_NONE),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": (K_COLUMN, C_ENERGY, T_NONE),
    "DCGM_FI_DEV_GPU_TEMP": (K_COLUMN, C_TEMP, T_NONE),
    "DCGM_FI_DEV_SM_CLOCK": (K_COLUMN, C_SM_CLOCK, T_NONE),
    "DCGM_FI_DEV_MEM_CLOCK": (K_COLUMN, C_MEM_CLOCK, T_NONE),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": (K_COLUMN, C_PCIE_REPLAY, T_NONE),
    # Volatile (since driver load) totals, like nvidia-smi's *.volatile.total.
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": (K_COLUMN, C_ECC_SBE, T_NONE),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": (K_COLUMN, C_ECC_DBE, T_NONE),
    "DCGM_FI_DEV_XID_ERRORS": (K_COLUMN, C_XID_LAST, T_NONE),
    "DCGM_FI_DEV_POWER_MGMT_LIMIT_MAX": (K_MAX_POWER, 0, T_NONE),
    "DCGM_FI_DEV_FB_TOTAL": (K_IDENTITY, _F["memory_total_bytes"], T_MIB_TO_BYTES),
    "DCGM_FI_DEV_MAX_SM_CLOCK": (K_IDENTITY, _F["max_sm_clock_mhz"], T_NONE),
    "DCGM_FI_DEV_MAX_MEM_CLOCK": (K_IDENTITY, _F["max_mem_clock_mhz"], T_NONE),
    # Our exporter's own families.
    "fleet_gpu_info": (K_INFO, 0, T_NONE),
    "fleet_gpu_lost": (K_LOST, 0, T_NONE),
    "fleet_exporter_last_collect_success": (K_EXPORTER_OK, 0, T_NONE),
    # A count of XIDs, not the last code; the row's xid_last comes from
    # DCGM_FI_DEV_XID_ERRORS, which our exporter also serves.
    "fleet_gpu_xid_errors_total": (K_IGNORE, 0, T_NONE),
    # utkuozdemir/nvidia_gpu_exporter.
    "nvidia_smi_utilization_gpu_ratio": (K_COLUMN, C_GPU_UTIL, T_RATIO_TO_PCT),
    "nvidia_smi_utilization_memory_ratio": (K_COLUMN, C_MEM_COPY_UTIL, T_RATIO_TO_PCT),
    "nvidia_smi_memory_used_bytes": (K_COLUMN, C_FB_USED, T_BYTES_TO_MIB),
    "nvidia_smi_memory_free_bytes": (K_COLUMN, C_FB_FREE, T_BYTES_TO_MIB),
    "nvidia_smi_power_draw_watts": (K_COLUMN, C_POWER, T_NONE),
    "nvidia_smi_energy_joules_total": (K_COLUMN, C_ENERGY, T_J_TO_MJ),
    "nvidia_smi_temperature_gpu": (K_COLUMN, C_TEMP, T_NONE),
    "nvidia_smi_clocks_current_sm_clock_hz": (K_COLUMN, C_SM_CLOCK, T_HZ_TO_MHZ),
    "nvidia_smi_clocks_current_memory_clock_hz": (K_COLUMN, C_MEM_CLOCK, T_HZ_TO_MHZ),
    "nvidia_smi_ecc_errors_corrected_volatile_total": (K_COLUMN, C_ECC_SBE, T_NONE),
    "nvidia_smi_ecc_errors_uncorrected_volatile_total": (K_COLUMN, C_ECC_DBE, T_NONE),
    "nvidia_smi_xid_last_timestamp_seconds": (K_XID_TS, 0, T_NONE),
    "nvidia_smi_power_max_limit_watts": (K_MAX_POWER, 0, T_NONE),
    "nvidia_smi_memory_total_bytes": (K_IDENTITY, _F["memory_total_bytes"], T_NONE),
    "nvidia_smi_clocks_max_sm_clock_hz": (K_IDENTITY, _F["max_sm_clock_mhz"], T_HZ_TO_MHZ),
    "nvidia_smi_clocks_max_memory_clock_hz": (K_IDENTITY, _F["max_mem_clock_mhz"], T_HZ_TO_MHZ),
    "nvidia_smi_pci_device_id": (K_IDENTITY, _F["pci_device_id"], T_HEX32),
    "nvidia_smi_gpu_info": (K_INFO, 0, T_NONE),
    "nvidia_smi_last_collect_success": (K_EXPORTER_OK, 0, T_NONE),
}
# A client_python exporter that declares a counter without "_total" exposes it
# with the suffix, and prometheus_client's text parser renames the samples of a
# `# TYPE x counter` family to `x_total`; so every name is also known with it.
METRICS: dict[str, tuple[int, int, int]] = dict(_METRICS)
for _name, _spec in _METRICS.items():
    if not _name.endswith("_total"):
        assert _name + "_total" not in _METRICS, _name
        METRICS[_name + "_total"] = _spec

# Identity labels of the info metrics: label -> identity field.
_FLEET_INFO_LABELS = {name: name for name in IDENTITY_FIELDS if name != "uuid"}
_FLEET_INFO_LABELS["modelName"] = "model"
_NVIDIA_INFO_LABELS = {
    "name": "model", "serial": "serial", "pci_bus_id": "pci_bus_id",
    "pci_sub_device_id": "pci_subsystem_id", "driver_version": "driver_version",
    "vbios_version": "vbios_version",
}
# Identity carried on every dcgm-exporter series.
_SERIES_LABELS = {
    "modelName": "model", "pci_bus_id": "pci_bus_id",
    "DCGM_FI_DRIVER_VERSION": "driver_version",
}
# Info metrics outrank labels repeated on every series.
PRIORITY_INFO = 0
PRIORITY_SERIES = 1

# nvidia_gpu_exporter gives the CUDA compute capability, not the NVML
# architecture; the major.minor pairs are NVIDIA's published table.
_ARCHITECTURES = {
    "6.0": "Pascal", "6.1": "Pascal", "6.2": "Pascal",
    "7.0": "Volta", "7.2": "Volta", "7.5": "Turing",
    "8.0": "Ampere", "8.6": "Ampere", "8.7": "Ampere", "8.9": "Ada",
    "9.0": "Hopper", "10.0": "Blackwell", "10.3": "Blackwell",
    "12.0": "Blackwell", "12.1": "Blackwell",
}


class Entry(NamedTuple):
    """What one series (name and labels) contributes to a payload's result."""

    kind: int
    uuid: str | None
    target: int = 0          # column (K_COLUMN) or identity field (K_IDENTITY)
    transform: int = T_NONE
    xid: int | None = None   # K_XID_TS: the XID code of the series
    identity: tuple[tuple[int, object], ...] = ()  # (field, value) from labels
    priority: int = PRIORITY_SERIES
    gpu_index: int | None = None


def normalise_uuid(labels: Mapping[str, str]) -> str | None:
    """Return the GPU UUID of a series, or None when it is not per-GPU.

    ``UUID`` (dcgm-exporter, ours) is taken as is; ``uuid`` from
    nvidia_gpu_exporter gets back the ``GPU-`` prefix the exporter strips.
    """
    uuid = labels.get("UUID") or labels.get("uuid")
    if not uuid:
        return None
    if "UUID" not in labels or not labels["UUID"]:
        if uuid[:4].upper() not in ("GPU-", "MIG-"):
            uuid = "GPU-" + uuid
    return uuid


# The columns these labels are stored in: gpu_samples.gpu_index and
# gpus.gpu_index are smallint, gpu_samples.xid_last an integer. A larger value
# is no GPU index or XID code; kept, it would not fit its column.
MAX_GPU_INDEX = 2**15 - 1
MAX_XID = 2**31 - 1


def _index(value: str | None, limit: int = MAX_GPU_INDEX) -> int | None:
    """A label's non-negative integer, None if it is not one or exceeds ``limit``."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    number = int(value)
    return number if number <= limit else None


def _identity_value(field: int, value: str) -> object:
    """Return a label's value as the identity field holds it, None if it has none.

    Equal values come back as one shared object (see `MAX_SHARED_NUMBERS`).
    """
    if value in _NOT_AVAILABLE:
        return None
    if field in INT_IDENTITY_FIELDS or field in FLOAT_IDENTITY_FIELDS:
        key = (field, value)
        try:
            return _NUMBERS[key]
        except KeyError:
            pass
        number = _number(field, value)
        if len(_NUMBERS) < MAX_SHARED_NUMBERS:
            _NUMBERS[key] = number
        return number
    return value if field in _UNSHARED_FIELDS else sys.intern(value)


def _number(field: int, value: str) -> int | float | None:
    try:
        if field in INT_IDENTITY_FIELDS:
            return int(value) if value.isdigit() else int(float(value))
        return float(value)
    except (ValueError, OverflowError):
        return None


def _identity(labels: Mapping[str, str], table: Mapping[str, str]) -> tuple[tuple[int, object], ...]:
    out = []
    for label, field_name in table.items():
        value = labels.get(label)
        if value is not None:
            field = _F[field_name]
            converted = _identity_value(field, value)
            if converted is not None:
                out.append((field, converted))
    return tuple(out)


def classify(name: str, labels: Mapping[str, str], *, max_label_len: int) -> Entry:
    """Return the Entry for one series; it depends on name and labels only."""
    for value in labels.values():
        if len(value) > max_label_len:
            return Entry(K_REJECTED, None)
    kind, target, transform = METRICS.get(name, (K_IGNORE, 0, T_NONE))
    uuid = normalise_uuid(labels)
    if uuid is None:
        # Not per-GPU: only the exporter's own health is of interest.
        return Entry(kind if kind == K_EXPORTER_OK else K_IGNORE, None)
    if kind == K_EXPORTER_OK:
        kind = K_IGNORE
    if labels.get("GPU_I_ID"):
        # A MIG instance of the GPU, not the GPU itself (dcgm-exporter adds
        # GPU_I_ID/GPU_I_PROFILE); it must not overwrite the device's row.
        kind = K_IGNORE
    if kind == K_INFO:
        if name.startswith("nvidia_smi"):
            identity = _identity(labels, _NVIDIA_INFO_LABELS)
            arch = _ARCHITECTURES.get(labels.get("compute_cap", ""))
            if arch is not None:
                identity += ((_F["architecture"], arch),)
            gpu_index = _index(labels.get("index"))
        else:
            identity = _identity(labels, _FLEET_INFO_LABELS)
            gpu_index = _index(labels.get("gpu", labels.get("index")))
        return Entry(K_INFO, uuid, identity=identity, priority=PRIORITY_INFO,
                     gpu_index=gpu_index)
    xid = None
    if kind == K_XID_TS:
        xid = _index(labels.get("xid"), MAX_XID)
        if xid is None:
            kind = K_IGNORE
    return Entry(kind, uuid, target, transform, xid,
                 _identity(labels, _SERIES_LABELS), PRIORITY_SERIES,
                 _index(labels.get("gpu")))
