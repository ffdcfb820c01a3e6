"""Apple Silicon GPUs through ``ioreg`` (no root needed).

What macOS gives without root is little: the IOAccelerator's
"PerformanceStatistics" ("Device Utilization %", "In use system memory") and
the machine's hardware UUID (IOPlatformUUID), used as the GPU's identity.
Power, temperature and clocks need ``powermetrics``, which needs root, so
they are left out.

Not tested on real hardware: the tests parse recorded ``ioreg`` text in
tests/fixtures/exporter/. The command runner is a constructor parameter so
those fixtures can stand in for the commands.
"""

from __future__ import annotations

import re
import socket
import subprocess
from typing import TYPE_CHECKING

from exporters.reading import GpuIdentity, GpuTelemetry, HostReading

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MIB = 1024 * 1024

ACCELERATOR_COMMAND = ("ioreg", "-r", "-d", "1", "-w", "0", "-c", "IOAccelerator")
PLATFORM_COMMAND = ("ioreg", "-rd1", "-c", "IOPlatformExpertDevice")
MEMSIZE_COMMAND = ("sysctl", "-n", "hw.memsize")
# ioreg answers in tens of milliseconds; more means something is wrong.
COMMAND_TIMEOUT_S = 5.0

_STATS = re.compile(r'"PerformanceStatistics"\s*=\s*\{([^}]*)\}')
_STAT = re.compile(r'"([^"]+)"\s*=\s*(-?\d+)')
_MODEL = re.compile(r'"model"\s*=\s*(?:<")?"?([^"<>\n]+)"?')
_CORES = re.compile(r'"gpu-core-count"\s*=\s*(\d+)')
_UUID = re.compile(r'"IOPlatformUUID"\s*=\s*"([^"]+)"')


def run_command(argv: Sequence[str]) -> str:
    """Run a command and return its stdout (raises on failure)."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT_S
    ).stdout


def parse_accelerators(text: str) -> list[dict[str, object]]:
    """Return one dict per IOAccelerator: model, cores and its statistics."""
    out: list[dict[str, object]] = []
    # Each accelerator is a "+-o Name <class ...>" line and a {...} block.
    for block in re.split(r"^\+-o ", text, flags=re.MULTILINE)[1:]:
        stats_match = _STATS.search(block)
        stats = {k: int(v) for k, v in _STAT.findall(stats_match.group(1))} if stats_match else {}
        model = _MODEL.search(block)
        cores = _CORES.search(block)
        out.append(
            {
                "model": model.group(1).strip() if model else "",
                "cores": int(cores.group(1)) if cores else None,
                "stats": stats,
            }
        )
    return out


def parse_platform_uuid(text: str) -> str:
    """Return the IOPlatformUUID from ``ioreg -rd1 -c IOPlatformExpertDevice``."""
    match = _UUID.search(text)
    if match is None:
        raise ValueError("no IOPlatformUUID in ioreg output")
    return match.group(1)


class AppleSource:
    """Read the Apple Silicon GPU of this Mac through ioreg."""

    def __init__(
        self,
        *,
        run: Callable[[Sequence[str]], str] = run_command,
        hostname: str | None = None,
    ) -> None:
        self._run = run
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self._uuid: str | None = None
        self._memory: str | None = None

    def read(self) -> HostReading:
        """Return one reading; raise if ioreg is missing or says nothing."""
        if self._uuid is None:
            self._uuid = parse_platform_uuid(self._run(PLATFORM_COMMAND))
            try:
                self._memory = self._run(MEMSIZE_COMMAND).strip()
            except (OSError, subprocess.SubprocessError):
                self._memory = ""
        accelerators = parse_accelerators(self._run(ACCELERATOR_COMMAND))
        if not accelerators:
            raise RuntimeError("ioreg lists no IOAccelerator")
        reading = HostReading(hostname=self.hostname)
        for index, acc in enumerate(accelerators):
            stats: dict[str, int] = acc["stats"]  # type: ignore[assignment]
            cores = acc["cores"]
            identity = GpuIdentity(
                index=index,
                # Apple GPUs have no UUID of their own; the machine's is stable
                # and unique, which is what the fleet needs to count them.
                uuid=self._uuid if index == 0 else f"{self._uuid}-{index}",
                model_name=str(acc["model"]),
                architecture="apple",
                virtualization_mode="none",
                memory_total_bytes=self._memory or "",
                gpu_cores="" if cores is None else str(cores),
            )
            telemetry = GpuTelemetry()
            if "Device Utilization %" in stats:
                telemetry.gpu_util = float(stats["Device Utilization %"])
            if "In use system memory" in stats:
                telemetry.fb_used_mib = float(stats["In use system memory"] // MIB)
            reading.gpus.append((identity, telemetry))
        return reading
