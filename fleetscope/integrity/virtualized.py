"""virtualized: a GPU whose NVML virtualisation mode is vGPU or host vGPU (DESIGN.md, Integrity).

A vGPU is a slice of a physical GPU shared with other guests: one RTX 4090
split into dozens of "cards". Passthrough (a whole GPU given to one VM) and
bare metal are fine. The finding's subject is the claim (node, GPU UUID); it
resolves when the identity no longer reports a virtualised mode.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fleetscope.integrity.findings import Found

if TYPE_CHECKING:
    import psycopg

KIND = "virtualized"
# NVML's nvmlGpuVirtualizationMode_t as the exporter names it (exporters/reading.py):
# VGPU (a guest's slice) and HOST_VGPU (a host that slices). HOST_VSGA is shared
# graphics for a host's own desktops, never rented out as a compute GPU.
FLAGGED_MODES = ("vgpu", "host_vgpu")
RESOLUTION = "the GPU no longer reports a vGPU virtualisation mode"

FIND_SQL = """
SELECT node_id, gpu_uuid, virtualization_mode, model FROM gpus
 WHERE virtualization_mode = ANY(%(modes)s) AND first_seen <= %(at)s
 ORDER BY node_id, gpu_uuid
"""


def find(conn: psycopg.Connection, *, at: datetime) -> list[Found]:
    """Every claim whose identity reports a virtualised mode, as of ``at``."""
    rows = conn.execute(FIND_SQL, {"modes": list(FLAGGED_MODES), "at": at}).fetchall()
    return [Found(node_id=n, gpu_uuid=u, evidence={"virtualization_mode": mode, "model": model})
            for n, u, mode, model in rows]
