"""NVIDIA GPUs through NVML (nvidia-ml-py, ``import pynvml``).

:class:`NvmlSource` reads one host's GPUs when asked; wrap it in
:class:`exporters.gpu_collector.GpuCollector` to serve it. The NVML module is a
constructor parameter (default ``pynvml``) so tests can pass an in-process
fake; errors are always ``pynvml.NVMLError`` instances, matched on their code.

- A metric the GPU does not support (NVML_ERROR_NOT_SUPPORTED) is skipped,
  and not asked again until NVML is re-initialised.
- A GPU that fell off the bus (NVML_ERROR_GPU_IS_LOST, on any call) is
  reported lost, with the UUID and PCI bus id seen before if any.
- If NVML cannot be initialised (no driver, no library) ``read()`` raises,
  the collector reports ``fleet_exporter_last_collect_success 0``, and the
  next scrape tries again.
- XID critical errors come from an NVML event set polled without blocking on
  every read; NVML events carry no time, so the timestamp is the time of the
  poll (the scrape).
"""

from __future__ import annotations

import importlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import pynvml as _pynvml

from exporters.reading import (
    VIRTUALIZATION_MODES,
    GpuIdentity,
    GpuTelemetry,
    HostReading,
    LostGpu,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

log = logging.getLogger(__name__)

MIB = 1024 * 1024

# Errors after which NVML must be initialised again before it can answer.
REINIT_ERRORS = frozenset(
    {
        _pynvml.NVML_ERROR_UNINITIALIZED,
        _pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        _pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
        _pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    }
)

# At most this many XID events are drained per read, so a GPU spewing events
# cannot stall a scrape; the rest wait for the next one.
MAX_EVENTS_PER_READ = 256

# NVML's architecture numbers (nvmlDeviceArchitecture_t) to names.
ARCHITECTURES: dict[int, str] = {
    _pynvml.NVML_DEVICE_ARCH_KEPLER: "kepler",
    _pynvml.NVML_DEVICE_ARCH_MAXWELL: "maxwell",
    _pynvml.NVML_DEVICE_ARCH_PASCAL: "pascal",
    _pynvml.NVML_DEVICE_ARCH_VOLTA: "volta",
    _pynvml.NVML_DEVICE_ARCH_TURING: "turing",
    _pynvml.NVML_DEVICE_ARCH_AMPERE: "ampere",
    _pynvml.NVML_DEVICE_ARCH_ADA: "ada",
    _pynvml.NVML_DEVICE_ARCH_HOPPER: "hopper",
    _pynvml.NVML_DEVICE_ARCH_BLACKWELL: "blackwell",
}


# CUDA cores per SM by compute capability, as in _ConvertSMVer2Cores (helper_cuda.h in
# NVIDIA's CUDA samples); there is no API that returns it. nvmlDeviceGetAttributes, NVML's
# only SM count, answers for MIG device handles alone (NVML's reference; a whole H100
# said NOT_SUPPORTED on 2026-11-24), so for a whole GPU the SM count is the core count
# (nvmlDeviceGetNumGpuCores) divided by this. Compute capabilities not listed: no SM count.
CORES_PER_SM: dict[tuple[int, int], int] = {
    (6, 0): 64, (6, 1): 128, (6, 2): 128,  # Pascal
    (7, 0): 64, (7, 2): 64, (7, 5): 64,  # Volta, Turing
    (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128,  # Ampere (GA100, GA10x), Ada
    (9, 0): 128,  # Hopper
    (10, 0): 128, (10, 1): 128, (10, 3): 128, (11, 0): 128, (12, 0): 128, (12, 1): 128,  # Blackwell
}


def sm_count_from_cores(cores: int | None, capability: tuple[int, int] | None) -> str:
    """The SM count implied by a core count and compute capability; "" when it cannot be told."""
    if cores is None or capability is None:
        return ""
    per_sm = CORES_PER_SM.get((int(capability[0]), int(capability[1])))
    if per_sm is None or cores <= 0 or cores % per_sm:
        return ""
    return str(cores // per_sm)


class _Lost(Exception):
    """The GPU being read fell off the bus."""


class _Reinit(Exception):
    """NVML lost its state (driver unloaded, ...): initialise again."""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


class NvmlSource:
    """Read every GPU on this host through NVML."""

    def __init__(
        self,
        nvml: ModuleType | Any | None = None,
        *,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self._clock = clock
        self._initialised = False
        self._driver = ""
        self._identities: dict[int, GpuIdentity] = {}
        self._unsupported: set[str] = set()
        self._event_set: Any = None
        self._xid_capable: set[str] = set()
        # uuid -> [count, last code, last unix time]
        self._xid: dict[str, list[float]] = {}

    # -- lifecycle -------------------------------------------------------

    def _init(self) -> None:
        nvml = self.nvml
        nvml.nvmlInit()
        self._initialised = True
        self._unsupported.clear()
        self._identities.clear()
        try:
            self._driver = _text(nvml.nvmlSystemGetDriverVersion())
        except _pynvml.NVMLError:
            self._driver = ""
        self._register_events()

    def _register_events(self) -> None:
        nvml = self.nvml
        self._xid_capable = set()
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except _pynvml.NVMLError as exc:
            log.info("NVML events unavailable, no XID errors: %s", exc)
            self._event_set = None
            return
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                nvml.nvmlDeviceRegisterEvents(
                    handle, _pynvml.nvmlEventTypeXidCriticalError, self._event_set
                )
            except _pynvml.NVMLError as exc:
                log.info("GPU %d: no XID events: %s", index, exc)
                continue
            self._xid_capable.add(uuid)
            self._xid.setdefault(uuid, [0.0, 0.0, 0.0])

    def close(self) -> None:
        """Free the event set and shut NVML down (errors ignored)."""
        if not self._initialised:
            return
        self._initialised = False
        if self._event_set is not None:
            try:
                self.nvml.nvmlEventSetFree(self._event_set)
            except _pynvml.NVMLError:
                pass
            self._event_set = None
        try:
            self.nvml.nvmlShutdown()
        except _pynvml.NVMLError:
            pass

    # -- reading -----------------------------------------------------------

    def read(self) -> HostReading:
        """Return one reading of every GPU; raise if NVML cannot be used."""
        if not self._initialised:
            try:
                self._init()
            except _pynvml.NVMLError:
                self.close()  # half-initialised: shut down, try again next time
                raise
        try:
            return self._read()
        except _Reinit as exc:
            self.close()
            raise RuntimeError(f"NVML needs re-initialising: {exc}") from exc
        except _pynvml.NVMLError as exc:
            if exc.value in REINIT_ERRORS:
                self.close()
            raise

    def _read(self) -> HostReading:
        nvml = self.nvml
        reading = HostReading(hostname=self.hostname)
        count = nvml.nvmlDeviceGetCount()
        self._poll_events()
        for index in range(count):
            known = self._identities.get(index)
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                identity = self._identity(index, handle)
                telemetry = self._telemetry(handle, identity)
            except (_Lost, _pynvml.NVMLError) as exc:
                # Fell off the bus: reported as lost, with what it last said it was.
                if isinstance(exc, _Lost) or exc.value == _pynvml.NVML_ERROR_GPU_IS_LOST:
                    reading.lost.append(LostGpu(index=index, uuid=known.uuid if known else "",
                                                pci_bus_id=known.pci_bus_id if known else ""))
                    continue
                if exc.value in REINIT_ERRORS:
                    raise
                log.warning("GPU %d skipped: %s", index, exc)
                continue
            reading.gpus.append((identity, telemetry))
        return reading

    def _get(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call one NVML function; None if unsupported or failing.

        ``key`` identifies the (GPU, metric) pair so an unsupported metric is
        not asked again on every scrape.
        """
        if key in self._unsupported:
            return None
        try:
            return fn(*args)
        except _pynvml.NVMLError as exc:
            code = exc.value
            if code == _pynvml.NVML_ERROR_GPU_IS_LOST:
                raise _Lost from exc
            if code in REINIT_ERRORS:
                raise _Reinit(str(exc)) from exc
            if code == _pynvml.NVML_ERROR_NOT_SUPPORTED:
                self._unsupported.add(key)
            else:
                log.debug("%s failed: %s", key, exc)
            return None

    def _identity(self, index: int, handle: Any) -> GpuIdentity:
        nvml = self.nvml
        uuid = self._get(f"{index}:uuid", nvml.nvmlDeviceGetUUID, handle)
        uuid = _text(uuid) if uuid is not None else ""
        known = self._identities.get(index)
        if known is not None and known.uuid == uuid:
            return known

        def get(name: str, fn: Callable[..., Any], *args: Any) -> Any:
            return self._get(f"{index}:{name}", fn, handle, *args)

        def text(value: Any) -> str:
            return "" if value is None else _text(value)

        pci = get("pci", nvml.nvmlDeviceGetPciInfo)
        minor = get("minor", nvml.nvmlDeviceGetMinorNumber)
        arch = get("arch", nvml.nvmlDeviceGetArchitecture)
        mode = get("virt", nvml.nvmlDeviceGetVirtualizationMode)
        memory = get("mem", nvml.nvmlDeviceGetMemoryInfo)
        attributes = get("attrs", nvml.nvmlDeviceGetAttributes)
        cores = get("cores", nvml.nvmlDeviceGetNumGpuCores)
        max_sm = get("max_sm", nvml.nvmlDeviceGetMaxClockInfo, _pynvml.NVML_CLOCK_SM)
        max_mem = get("max_mem", nvml.nvmlDeviceGetMaxClockInfo, _pynvml.NVML_CLOCK_MEM)
        identity = GpuIdentity(
            index=index,
            uuid=uuid,
            model_name=text(get("name", nvml.nvmlDeviceGetName)),
            pci_bus_id=_text(pci.busId) if pci is not None else "",
            device=f"nvidia{minor}" if minor is not None else "",
            serial=text(get("serial", nvml.nvmlDeviceGetSerial)),
            pci_device_id=f"0x{pci.pciDeviceId:08X}" if pci is not None else "",
            pci_subsystem_id=f"0x{pci.pciSubSystemId:08X}" if pci is not None else "",
            board_part_number=text(get("part", nvml.nvmlDeviceGetBoardPartNumber)),
            architecture=(ARCHITECTURES.get(arch, str(arch)) if arch is not None else ""),
            virtualization_mode=(
                VIRTUALIZATION_MODES.get(mode, str(mode)) if mode is not None else ""
            ),
            memory_total_bytes=str(memory.total) if memory is not None else "",
            sm_count=(str(attributes.multiprocessorCount) if attributes is not None
                      else sm_count_from_cores(cores, get("cc", nvml.nvmlDeviceGetCudaComputeCapability))),
            gpu_cores=text(cores),
            max_sm_clock_mhz=text(max_sm),
            max_mem_clock_mhz=text(max_mem),
            driver_version=self._driver,
            vbios_version=text(get("vbios", nvml.nvmlDeviceGetVbiosVersion)),
        )
        self._identities[index] = identity
        return identity

    def _telemetry(self, handle: Any, identity: GpuIdentity) -> GpuTelemetry:
        nvml = self.nvml
        index = identity.index

        def get(name: str, fn: Callable[..., Any], *args: Any) -> Any:
            return self._get(f"{index}:{name}", fn, handle, *args)

        t = GpuTelemetry()
        util = get("util", nvml.nvmlDeviceGetUtilizationRates)
        if util is not None:
            t.gpu_util = float(util.gpu)
            t.mem_copy_util = float(util.memory)
        memory = get("mem", nvml.nvmlDeviceGetMemoryInfo)
        if memory is not None:
            # dcgm-exporter reports whole MiB.
            t.fb_used_mib = float(memory.used // MIB)
            t.fb_free_mib = float(memory.free // MIB)
        power = get("power", nvml.nvmlDeviceGetPowerUsage)
        if power is not None:
            t.power_w = power / 1000.0  # NVML: mW
        energy = get("energy", nvml.nvmlDeviceGetTotalEnergyConsumption)
        if energy is not None:
            t.energy_mj = float(energy)
        temp = get("temp", nvml.nvmlDeviceGetTemperature, _pynvml.NVML_TEMPERATURE_GPU)
        if temp is not None:
            t.temp_c = float(temp)
        sm = get("sm_clock", nvml.nvmlDeviceGetClockInfo, _pynvml.NVML_CLOCK_SM)
        if sm is not None:
            t.sm_clock_mhz = float(sm)
        mem = get("mem_clock", nvml.nvmlDeviceGetClockInfo, _pynvml.NVML_CLOCK_MEM)
        if mem is not None:
            t.mem_clock_mhz = float(mem)
        replay = get("replay", nvml.nvmlDeviceGetPcieReplayCounter)
        if replay is not None:
            t.pcie_replay = float(replay)
        for name, kind in (
            ("ecc_sbe_vol_total", _pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ("ecc_dbe_vol_total", _pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        ):
            count = get(name, nvml.nvmlDeviceGetTotalEccErrors, kind, _pynvml.NVML_VOLATILE_ECC)
            if count is not None:
                setattr(t, name, float(count))
        xid = self._xid.get(identity.uuid) if identity.uuid in self._xid_capable else None
        if xid is not None:
            t.xid_count, t.xid_last_code, t.xid_last_timestamp = xid
        return t

    def _poll_events(self) -> None:
        """Drain pending XID events without waiting (timeout 0)."""
        if self._event_set is None:
            return
        nvml = self.nvml
        for _ in range(MAX_EVENTS_PER_READ):
            try:
                data = nvml.nvmlEventSetWait(self._event_set, 0)
            except _pynvml.NVMLError as exc:
                if exc.value in REINIT_ERRORS:
                    raise _Reinit(str(exc)) from exc
                if exc.value != _pynvml.NVML_ERROR_TIMEOUT:
                    log.debug("NVML event wait: %s", exc)
                return
            if not data.eventType & _pynvml.nvmlEventTypeXidCriticalError:
                continue
            try:
                uuid = _text(nvml.nvmlDeviceGetUUID(data.device))
            except _pynvml.NVMLError:
                continue
            state = self._xid.setdefault(uuid, [0.0, 0.0, 0.0])
            state[0] += 1
            state[1] = float(data.eventData)
            state[2] = self._clock()
