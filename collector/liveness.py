"""What makes a parsed payload evidence of a live GPU host (issue 15, items 5 and 6).

DESIGN.md, "Trust boundaries": a push or a scrape is an ok observation only
when it carries the exporter's health metric and at least one GPU identity.
Anything else proves nothing: an empty or comments-only body, or any
Prometheus endpoint (the collector's own /metrics included) would otherwise
count as "up". The rule, as ``refusal`` applies it:

- at least one GPU, named by a UUID of the shape NVML, DCGM or Apple's
  IOPlatformUUID give (``plausible_uuid``); one implausible UUID refuses the
  whole payload, as an unstorable one already does (collector/parse.py);
- and the exporter's health (``fleet_exporter_last_collect_success`` or
  nvidia_gpu_exporter's ``nvidia_smi_last_collect_success``), or else
  recognised exporter output for that GPU: a telemetry series of a known
  family (dcgm-exporter serves no health metric of its own) or an info
  metric of a known exporter.

Identity fields outside sane ranges (a negative or absurd memory size, SM
count or clock) are dropped from the identity, not stored, and counted by
reason (``sanitise``): the GPU itself may still be real and reporting.

Both the push receiver (400 with the reason) and the scraper (a failed
observation with the reason) use these, so both sources follow one rule.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.parse import GpuIdentity, ParsedPayload

# A GPU UUID as NVML and DCGM print it (GPU-8-4-4-4-12 hex), a MIG device's
# (MIG-<uuid>, or the older MIG-GPU-<uuid>/gi/ci), nvidia_gpu_exporter's after
# collector/metricnames.py puts its GPU- prefix back, and the Apple exporter's
# IOPlatformUUID (no prefix; "-<n>" for a second GPU of one machine).
_HEX_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID_SHAPE = re.compile(rf"(?:GPU-|MIG-|MIG-GPU-)?({_HEX_UUID})(?:/\d{{1,3}}/\d{{1,3}}|-\d{{1,3}})?")

# Sane ranges of identity numbers. The smallest GPU memory in the model table
# is a few GiB and the largest card today has 192 GB (B200); Apple's unified
# memory reaches 512 GB. 64 MiB to 4 TiB refuses only the impossible.
MIN_MEMORY_BYTES = 64 * 2**20
MAX_MEMORY_BYTES = 4 * 2**40
# B200 has 148 SMs; 1024 leaves room for a decade of growth.
MAX_SM_COUNT = 1024
# Boost clocks are ~2-3 GHz (SM) and memory clocks up to ~12 GHz effective.
MAX_CLOCK_MHZ = 20_000.0
_RANGES = {
    "memory_total_bytes": (MIN_MEMORY_BYTES, MAX_MEMORY_BYTES),
    "sm_count": (1, MAX_SM_COUNT),
    "max_sm_clock_mhz": (1.0, MAX_CLOCK_MHZ),
    "max_mem_clock_mhz": (1.0, MAX_CLOCK_MHZ),
}

# Reasons (the `reason` label of fleetscope_collector_rejects_total).
R_NO_GPU = "no_gpu"                      # the payload names no GPU at all
R_NO_HEALTH = "no_health_metric"         # GPUs named, but no health metric nor known telemetry
R_IMPLAUSIBLE_UUID = "implausible_uuid"  # a UUID not of any GPU's shape
R_IMPLAUSIBLE_FIELD = "implausible_field"  # an identity number outside its sane range (dropped)


def plausible_uuid(uuid: str) -> bool:
    """True when ``uuid`` has the shape of a real GPU's UUID (see the module doc) and is not all zeros."""
    match = _UUID_SHAPE.fullmatch(uuid)
    # The all-zero UUID is what a broken or virtual device reports, never a GPU's own.
    return match is not None and match.group(1).strip("0-") != ""


def implausible_fields(identity: GpuIdentity) -> list[str]:
    """The names of ``identity``'s numeric fields that lie outside their sane range."""
    bad = []
    for name, (lo, hi) in _RANGES.items():
        value = getattr(identity, name)
        if value is not None and not lo <= value <= hi:
            bad.append(name)
    return bad


def sanitise(payload: ParsedPayload) -> None:
    """Drop implausible identity numbers from ``payload`` in place, counting each in its rejects."""
    for i, identity in enumerate(payload.identities):
        bad = implausible_fields(identity)
        if bad:
            payload.identities[i] = identity._replace(**dict.fromkeys(bad))
            payload.rejects[R_IMPLAUSIBLE_FIELD] = payload.rejects.get(R_IMPLAUSIBLE_FIELD, 0) + len(bad)


def refusal(payload: ParsedPayload) -> tuple[str, str] | None:
    """None when ``payload`` is evidence of a live GPU host; else (reason, a sentence for the host).

    Sanitises the payload's identities first (``sanitise``).
    """
    uuids = [identity.uuid for identity in payload.identities]
    for uuid in uuids:
        if not plausible_uuid(uuid):
            shown = uuid if len(uuid) <= 60 else uuid[:57] + "..."
            return R_IMPLAUSIBLE_UUID, f"GPU UUID {shown!r} is not the UUID of a GPU (GPU-xxxxxxxx-xxxx-...)"
    sanitise(payload)
    if not uuids:
        return R_NO_GPU, "the payload names no GPU: a liveness observation needs at least one GPU UUID"
    if payload.exporter_ok is None and not any(_recognised(payload, i) for i in range(len(uuids))):
        return (R_NO_HEALTH, "the payload has neither the exporter's health metric "
                "(fleet_exporter_last_collect_success) nor telemetry of a known GPU exporter")
    return None


def _recognised(payload: ParsedPayload, i: int) -> bool:
    """Whether GPU ``i`` has a known telemetry value or identity from a known exporter's series."""
    identity = payload.identities[i]
    if any(value is not None for value in identity[1:]):
        return True
    sample = payload.samples[i] if i < len(payload.samples) else None
    return sample is not None and any(value is not None for value in sample[2:15])
