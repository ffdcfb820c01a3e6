"""Integrity checks: fake, virtualised, copied and sybil GPUs (DESIGN.md, Integrity).

One module per check, each a ``find(conn, *, at, ...)`` that returns the
complete list of what it finds as of ``at`` with the evidence:

- duplicate_uuid: one UUID reported by two or more nodes at once;
- virtualized: an NVML virtualisation mode of vGPU or host vGPU;
- spec_mismatch: a model contradicted by its memory, SMs or clocks against
  the reference table (fleetscope/gpu_models.py); it also marks the GPUs it
  could examine (``gpus.checked_at``; since issue 14 a GPU is verified only
  by a passed proof of GPU, fleetscope/proof.py, never by what it reports);
- cloned_telemetry: identical telemetry series under different UUIDs;
- identity_change: a node's GPU set changed without re-registration;
- fleet_jump: a step in registered or online GPUs far outside the recent
  variation (robust statistics over ``fleet_gpu_counts``).

``run_checks`` runs them all and ``findings.reconcile`` stores each result:
idempotent (re-running refreshes ``last_seen`` and opens nothing new) and
self-resolving (a finding whose evidence is gone gets ``resolved_at`` and the
check's resolution text). The collector's maintenance loop calls
``run_checks`` every integrity period (collector/maintenance.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fleetscope.integrity import (
    cloned_telemetry,
    duplicate_uuid,
    fleet_jump,
    identity_change,
    spec_mismatch,
    virtualized,
)
from fleetscope.integrity.findings import Found, Reconciled, reconcile
from fleetscope.proof import FAILED_FINDING_KIND

if TYPE_CHECKING:
    import psycopg

__all__ = ["IntegritySettings", "Found", "Reconciled", "run_checks", "record_fleet_counts", "KINDS",
           "FINDING_KINDS"]

KINDS = (duplicate_uuid.KIND, virtualized.KIND, spec_mismatch.KIND, cloned_telemetry.KIND,
         identity_change.KIND, fleet_jump.KIND)
# Every kind a finding can have: the checks' and the one a failed proof of GPU
# opens (fleetscope/proof.py). What the API's ?kind= accepts.
FINDING_KINDS = (*KINDS, FAILED_FINDING_KIND)


@dataclass(frozen=True)
class IntegritySettings:
    """Every check's thresholds; the defaults and their reasons are in each check's module."""

    duplicate_window: timedelta = duplicate_uuid.DEFAULT_WINDOW
    clone_window: timedelta = cloned_telemetry.DEFAULT_WINDOW
    clone_min_samples: int = cloned_telemetry.DEFAULT_MIN_SAMPLES
    identity_window: timedelta = identity_change.DEFAULT_WINDOW
    jump: fleet_jump.JumpSettings = field(default_factory=fleet_jump.JumpSettings)

    @classmethod
    def from_env(cls) -> IntegritySettings:
        """The defaults with fleet_jump's thresholds from the environment (FLEETSCOPE_JUMP_*)."""
        return cls(jump=fleet_jump.JumpSettings.from_env())


def run_checks(conn: psycopg.Connection, *, at: datetime,
               settings: IntegritySettings | None = None) -> dict[str, Reconciled]:
    """Run every check as of ``at`` and store the results; returns what each changed, by kind.

    ``conn`` is an autocommit connection: each check reconciles its own kind
    in its own transaction, so one failing check leaves the others' results.
    """
    s = settings or IntegritySettings()
    runs = (
        (duplicate_uuid, lambda: duplicate_uuid.find(conn, at=at, window=s.duplicate_window)),
        (virtualized, lambda: virtualized.find(conn, at=at)),
        (spec_mismatch, lambda: spec_mismatch.find(conn, at=at)),
        (cloned_telemetry, lambda: cloned_telemetry.find(conn, at=at, window=s.clone_window,
                                                         min_samples=s.clone_min_samples)),
        (identity_change, lambda: identity_change.find(conn, at=at, window=s.identity_window)),
        (fleet_jump, lambda: fleet_jump.find(conn, at=at, settings=s.jump)),
    )
    done = {}
    for module, find in runs:
        done[module.KIND] = reconcile(conn, module.KIND, find(), at=at, resolution=module.RESOLUTION)
    return done


def record_fleet_counts(conn: psycopg.Connection, *, at: datetime) -> tuple[int, int]:
    """Record the snapshot's registered and online GPU counts at ``at`` for fleet_jump; returns them.

    The snapshot's own counts (``fleet_counts``), not its stored row: the
    checks run after this, and a tick's stored snapshot must be computed after
    the checks that ran at it, or it would show none of their findings.
    """
    from fleetscope.snapshot import fleet_counts

    gpus = fleet_counts(conn, at=at)["gpus"]
    fleet_jump.record_counts(conn, at=at, registered=gpus["registered"], online=gpus["online"])
    return gpus["registered"], gpus["online"]
