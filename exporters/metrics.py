"""The exporter's metrics: names, labels and order, decided once.

Every backend's :class:`~exporters.reading.HostReading` becomes metric
families here, so NVML, the simulator and Apple hosts are exposed alike, and
the fast :class:`Template` used by the fleet simulator renders byte-for-byte
what ``prometheus_client.generate_latest`` renders for the same families.

Per-GPU telemetry uses dcgm-exporter's names and labels so the dashboards
people already run keep working (issue 3). dcgm-exporter declares some of
them (energy, PCIe replays, ECC) as counters without a ``_total`` suffix;
prometheus_client always writes counters as ``<name>_total`` (both in the
TYPE line and the samples), which would rename them, so those are exposed as
gauges under their exact dcgm names. ``rate()`` and ``increase()`` work on them
unchanged; our own counters (``fleet_gpu_xid_errors_total``) are true
counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from exporters.reading import GpuIdentity, HostReading

# dcgm-exporter's label names, in its order (dcgm-exporter, pkg/counters).
DCGM_LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname")


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family: name, help, Prometheus type, GpuTelemetry attribute."""

    name: str
    documentation: str
    type: str
    attr: str = ""


INFO = Spec(
    "fleet_gpu_info",
    "GPU identity; value 1. Unsupported fields are empty strings. "
    "sm_count is the multiprocessor count, gpu_cores NVML's core count.",
    "gauge",
)
LOST = Spec(
    "fleet_gpu_lost",
    "1 for a GPU that fell off the bus (NVML_ERROR_GPU_IS_LOST).",
    "gauge",
)

# Help strings follow dcgm-exporter's default-counters.csv.
DCGM: tuple[Spec, ...] = (
    Spec("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "gauge", "gpu_util"),
    Spec("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "gauge", "mem_copy_util"),
    Spec("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "gauge", "fb_used_mib"),
    Spec("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "gauge", "fb_free_mib"),
    Spec("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "gauge", "power_w"),
    Spec(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "Total energy consumption since boot (in mJ).",
        "gauge",
        "energy_mj",
    ),
    Spec("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "gauge", "temp_c"),
    Spec("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "gauge", "sm_clock_mhz"),
    Spec("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", "gauge", "mem_clock_mhz"),
    Spec(
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries.", "gauge", "pcie_replay"
    ),
    Spec(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "Total number of single-bit volatile ECC errors.",
        "gauge",
        "ecc_sbe_vol_total",
    ),
    Spec(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "Total number of double-bit volatile ECC errors.",
        "gauge",
        "ecc_dbe_vol_total",
    ),
    Spec(
        "DCGM_FI_DEV_XID_ERRORS",
        "Value of the last XID error encountered (0: none since the exporter started).",
        "gauge",
        "xid_last_code",
    ),
)

XID: tuple[Spec, ...] = (
    Spec(
        "fleet_gpu_xid_errors",
        "XID critical errors seen (NVML events) since the exporter started.",
        "counter",
        "xid_count",
    ),
    Spec(
        "fleet_gpu_xid_last_timestamp_seconds",
        "Unix time the last XID error was seen (0: none); resolution is the scrape.",
        "gauge",
        "xid_last_timestamp",
    ),
)

SUCCESS = Spec(
    "fleet_exporter_last_collect_success",
    "1 if the last collect read the GPUs, 0 if it failed (e.g. NVML init).",
    "gauge",
)
DURATION = Spec(
    "fleet_exporter_collect_duration_seconds",
    "Seconds the last collect took to read the GPUs.",
    "gauge",
)


def dcgm_labels(identity: GpuIdentity, hostname: str) -> dict[str, str]:
    """Return dcgm-exporter's label set for one GPU."""
    return {
        "gpu": str(identity.index),
        "UUID": identity.uuid,
        "pci_bus_id": identity.pci_bus_id,
        "device": identity.device,
        "modelName": identity.model_name,
        "Hostname": hostname,
    }


def info_labels(identity: GpuIdentity, hostname: str) -> dict[str, str]:
    """Return fleet_gpu_info's label set for one GPU ("" where unsupported)."""
    return {
        "UUID": identity.uuid,
        "gpu": str(identity.index),
        "serial": identity.serial,
        "pci_bus_id": identity.pci_bus_id,
        "pci_device_id": identity.pci_device_id,
        "pci_subsystem_id": identity.pci_subsystem_id,
        "board_part_number": identity.board_part_number,
        "architecture": identity.architecture,
        "virtualization_mode": identity.virtualization_mode,
        "memory_total_bytes": identity.memory_total_bytes,
        "sm_count": identity.sm_count,
        "gpu_cores": identity.gpu_cores,
        "max_sm_clock_mhz": identity.max_sm_clock_mhz,
        "max_mem_clock_mhz": identity.max_mem_clock_mhz,
        "driver_version": identity.driver_version,
        "vbios_version": identity.vbios_version,
        "modelName": identity.model_name,
        "device": identity.device,
        "Hostname": hostname,
    }


def _walk(
    reading: HostReading | None, success: bool, duration: float
) -> Iterator[tuple[Spec, str, object, float]]:
    """Yield (family, label kind, subject, value) in exposition order.

    The single source of order for both :func:`families` and :func:`values`,
    so the template and the collector can never disagree.
    """
    if reading is not None:
        for identity, _ in reading.gpus:
            yield INFO, "info", identity, 1.0
        for lost in reading.lost:
            yield LOST, "lost", lost, 1.0
        for spec in DCGM:
            attr = spec.attr
            for identity, telemetry in reading.gpus:
                value = getattr(telemetry, attr)
                if value is not None:
                    yield spec, "dcgm", identity, value
        for spec in XID:
            attr = spec.attr
            for identity, telemetry in reading.gpus:
                value = getattr(telemetry, attr)
                if value is not None:
                    yield spec, "short", identity, value
    yield SUCCESS, "", None, 1.0 if success else 0.0
    yield DURATION, "", None, duration


def _labels(kind: str, subject: object, hostname: str) -> dict[str, str]:
    if kind == "dcgm":
        return dcgm_labels(subject, hostname)  # type: ignore[arg-type]
    if kind == "info":
        return info_labels(subject, hostname)  # type: ignore[arg-type]
    if kind == "lost":
        return {
            "UUID": subject.uuid,  # type: ignore[attr-defined]
            "gpu": str(subject.index),  # type: ignore[attr-defined]
            "pci_bus_id": subject.pci_bus_id,  # type: ignore[attr-defined]
            "Hostname": hostname,
        }
    if kind == "short":
        return {"UUID": subject.uuid, "gpu": str(subject.index)}  # type: ignore[attr-defined]
    return {}


def families(
    reading: HostReading | None, *, success: bool = True, duration: float = 0.0
) -> list[Metric]:
    """Return the metric families for one reading plus the exporter's health.

    ``reading`` is ``None`` when the collect failed: only the health families
    are returned, with success 0.
    """
    hostname = reading.hostname if reading is not None else ""
    out: list[Metric] = []
    current: Metric | None = None
    current_spec: Spec | None = None
    for spec, kind, subject, value in _walk(reading, success, duration):
        if spec is not current_spec:
            current = Metric(spec.name, spec.documentation, spec.type)
            current_spec = spec
            out.append(current)
        sample_name = spec.name + "_total" if spec.type == "counter" else spec.name
        current.add_sample(sample_name, _labels(kind, subject, hostname), value)  # type: ignore[union-attr]
    return out


def values(
    reading: HostReading | None, *, success: bool = True, duration: float = 0.0
) -> list[float]:
    """Return the sample values of :func:`families`, in the same order."""
    return [value for _, _, _, value in _walk(reading, success, duration)]


class _One:
    """A one-family 'registry' for generate_latest."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterable[Metric]:
        return (self._metric,)


class Template:
    """Prometheus text for a fixed set of series with the values left open.

    Built once from the families of one reading (through generate_latest
    itself, so the output is the library's, byte for byte); :meth:`render`
    fills in a new value vector from :func:`values`. The series set must not
    change between readings: the simulator guarantees that per host.
    Strings are interned through ``intern`` so that many hosts share their
    HELP/TYPE lines and metric names.
    """

    __slots__ = ("_slots", "_tail")

    def __init__(self, fams: Sequence[Metric], *, intern: dict[str, str] | None = None) -> None:
        pool = intern if intern is not None else {}

        def keep(s: str) -> str:
            return pool.setdefault(s, s)

        slots: list[tuple[str, str, str]] = []
        pending_head = ""
        for family in fams:
            samples = family.samples
            empty = Metric(family.name, family.documentation, family.type)
            head = generate_latest(_One(empty)).decode()
            pending_head += head
            for sample in samples:
                single = Metric(family.name, family.documentation, family.type)
                single.add_sample(sample.name, sample.labels, 0.0)
                line = generate_latest(_One(single)).decode()[len(head) :]
                # "name{labels} 0.0\n" -> "name", "{labels} "; "name 0.0\n" -> "name", " "
                prefix = line[: -len("0.0\n")]
                brace = prefix.find("{")
                cut = brace if brace >= 0 else len(prefix) - 1
                name, rest = prefix[:cut], prefix[cut:]
                slots.append((keep(pending_head), keep(name), keep(rest)))
                pending_head = ""
        self._slots = tuple(slots)
        self._tail = keep(pending_head)

    def __len__(self) -> int:
        return len(self._slots)

    def render(self, vals: Sequence[float]) -> bytes:
        """Return the exposition text with ``vals`` as the sample values."""
        if len(vals) != len(self._slots):
            raise ValueError(f"template has {len(self._slots)} series, got {len(vals)} values")
        fmt = floatToGoString
        parts: list[str] = []
        append = parts.append
        for (head, name, rest), value in zip(self._slots, vals):
            if head:
                append(head)
            append(name)
            append(rest)
            append(fmt(value))
            append("\n")
        if self._tail:
            append(self._tail)
        return "".join(parts).encode()
