"""Building scenarios in a real database: operators, nodes, observations, GPUs, jobs.

Rows are written with plain SQL in the shapes the collector's writer
produces, so a scenario says exactly what was received and when.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg

from fleetscope import proof
from fleetscope.gpu_models import lookup
from fleetscope.registry import create_operator, register_node
from fleetscope.rollups import refresh
from fleetscope.uptime import slot_of

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)


def at(seconds: float = 0, *, base: datetime = T0) -> datetime:
    return base + timedelta(seconds=seconds)


@dataclass
class Fleet:
    conn: psycopg.Connection
    operator_id: int = 0
    _names: int = field(default=0)

    def __post_init__(self) -> None:
        if not self.operator_id:
            self.operator_id, _ = create_operator(self.conn, f"operator-{id(self)}")

    def node(self, *, registered_at: datetime = T0 - timedelta(days=30), interval_s: int = 15,
             grace_s: int | None = None, name: str | None = None) -> int:
        self._names += 1
        return register_node(self.conn, operator_id=self.operator_id, name=name or f"node-{self._names}",
                             interval_s=interval_s, grace_s=grace_s, registered_at=registered_at).node_id

    def observe(self, node_id: int, when: datetime, *, ok: bool = True, source: str = "push") -> None:
        interval = self.conn.execute("SELECT interval_s FROM nodes WHERE node_id = %s", (node_id,)).fetchone()[0]
        self.conn.execute(
            "INSERT INTO observations (time, node_id, ok, source, slot, latency_ms, error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (when, node_id, ok, source, slot_of(when, interval), 3.0, None if ok else "connection refused"))

    def gpus(self, node_id: int, uuids: list[str], *, model: str = "NVIDIA A100-SXM4-80GB",
             since: datetime = T0 - timedelta(days=30), lost: list[str] = (), checked: bool = False,
             models: dict[str, str] | None = None, proved_at: datetime = T0 - timedelta(hours=1)) -> None:
        """Identity rows for ``uuids`` on ``node_id`` and the node's GPU set from ``since``.

        ``checked``: each GPU passed a proof of GPU at ``proved_at`` (verified for 24 h from then).
        """
        for index, gpu_uuid in enumerate(list(uuids) + list(lost)):
            self.conn.execute(
                "INSERT INTO gpus (node_id, gpu_uuid, gpu_index, model, memory_total_bytes, first_seen, last_seen)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (node_id, gpu_uuid) DO NOTHING",
                (node_id, gpu_uuid, index, (models or {}).get(gpu_uuid, model), 80 * 2**30, since, since))
            if checked:
                self.proof(node_id, gpu_uuid, "passed", decided_at=proved_at)
        self.gpu_set(node_id, since, healthy=list(uuids), lost=list(lost))

    def proof(self, node_id: int, gpu_uuid: str, verdict: str, *, decided_at: datetime = T0 - timedelta(hours=1),
              reason: str = "") -> None:
        """A decided proof of GPU for one claim, in a round of its own opened just before ``decided_at``.

        Only its verdict and times, as a bundle publishes proofs older than an
        hour (tests/publishdata.py records whole ones); sized by the protocol.
        """
        model, memory = self.conn.execute("SELECT model, memory_total_bytes FROM gpus WHERE node_id = %s"
                                          " AND gpu_uuid = %s", (node_id, gpu_uuid)).fetchone()
        size = proof.size_for(lookup(model) or lookup("NVIDIA A100-SXM4-80GB"), memory_bytes=memory)
        offered = decided_at - timedelta(seconds=3)
        answered = None if verdict == "no_answer" else decided_at - timedelta(seconds=0.2)
        round_id = self.conn.execute(
            "INSERT INTO proof_rounds (opened_at, seed, protocol_version, scale, share)"
            " VALUES (%s, %s, 1, 1, 1) RETURNING round_id", (decided_at - timedelta(seconds=3), "00" * 32)).fetchone()[0]
        self.conn.execute(
            "INSERT INTO proof_challenges (round_id, node_id, gpu_uuid, model, memory_total_bytes, n, k,"
            " reference_tflops, budget_s, offered_at, started_at, rtt_s, committed_at, root, verdict, reason, seconds,"
            " tflops, decided_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (round_id, node_id, gpu_uuid, model, memory, size.n, size.k, size.reference_tflops, size.budget_s,
             offered, None if answered is None else offered + timedelta(seconds=0.05), 0.05 if answered else None,
             answered, "00" * 32 if answered else None, verdict, reason or None,
             2.75 if answered else None, size.flops / 2.75e12 if answered else None, decided_at))

    def gpu_set(self, node_id: int, since: datetime, *, healthy: list[str], lost: list[str] = ()) -> None:
        self.conn.execute("INSERT INTO node_gpu_sets (node_id, since, healthy, lost) VALUES (%s, %s, %s, %s)",
                          (node_id, since, healthy, list(lost)))

    def job(self, job_id: str, node_id: int, *, gpu_count: int, price: str, started_at: datetime,
            ended_at: datetime | None = None, status: str | None = None) -> None:
        status = status or ("running" if ended_at is None else "succeeded")
        self.conn.execute(
            "INSERT INTO jobs (job_id, node_id, gpu_count, price_per_gpu_hour, started_at, ended_at, status)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (job_id, node_id, gpu_count, Decimal(price), started_at, ended_at, status))

    def observing(self, start: datetime, end: datetime, *, collector_id: str = "c1") -> None:
        """A period in which the collector was observing (heartbeats from ``start`` to ``end``)."""
        self.conn.execute("INSERT INTO observing_periods (collector_id, started_at, last_beat_at) VALUES (%s, %s, %s)",
                          (collector_id, start, end))

    def finding(self, kind: str, *, node_id: int | None = None, gpu_uuid: str | None = None,
                first_seen: datetime = T0 - timedelta(hours=1), resolved_at: datetime | None = None) -> None:
        self.conn.execute(
            "INSERT INTO integrity_findings (kind, node_id, gpu_uuid, first_seen, last_seen, resolved_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)", (kind, node_id, gpu_uuid, first_seen, first_seen, resolved_at))


@dataclass(frozen=True)
class LastSeen:
    """The nodes of ``last_seen_nodes`` and each one's latest success at or before its ``at``."""

    dead: int
    recent: int
    never: int
    last_ok: dict[int, datetime | None]


def last_seen_nodes(fleet: Fleet, *, at: datetime = T0) -> LastSeen:
    """Three offline nodes (60 s interval) of ``fleet`` whose last success is known at ``at``.

    ``dead``: its last success two days before ``at``, then a failed
    observation every 7 minutes until ``at``; ``recent``: a success 300 s
    before ``at`` (in ``at``'s hour unless ``at`` is within 5 minutes of the
    hour), then a failure; ``never``: only failures. In plain mode the rollup
    is materialised up to the hour before ``at``'s, as the maintenance loop
    keeps it.
    """
    conn = fleet.conn
    fleet.observing(at - timedelta(days=3), at + timedelta(hours=1))
    dead, recent, never = (fleet.node(interval_s=60, registered_at=at - timedelta(days=3)) for _ in range(3))
    last_success = at - timedelta(days=2, minutes=17, seconds=3)
    fleet.observe(dead, last_success - timedelta(minutes=1))
    fleet.observe(dead, last_success)
    for minute in range(0, 2 * 24 * 60 - 20, 7):  # two days of failed scrapes after it
        fleet.observe(dead, at - timedelta(minutes=minute, seconds=30), ok=False)
        fleet.observe(never, at - timedelta(minutes=minute, seconds=30), ok=False)
    fleet.observe(recent, at - timedelta(seconds=300))  # beyond its 180 s grace
    fleet.observe(recent, at - timedelta(seconds=60), ok=False)
    if conn.execute("SELECT to_regclass('node_hourly_mat')").fetchone()[0]:
        refresh(conn, up_to=at - timedelta(hours=1))  # plain mode: most of it materialised
    return LastSeen(dead, recent, never,
                    {dead: last_success, recent: at - timedelta(seconds=300), never: None})
