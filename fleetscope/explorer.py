"""What the public explorer shows besides the snapshot: nodes, GPUs, history.

Every state here comes from the definitions the snapshot uses
(``states.NODE_STATE_SQL``, ``states.node_status``, the snapshot's GPU rules),
evaluated at the snapshot's own as-of time, so a table summed up equals the
headline counts (tests/test_explorer.py holds them to it). The dashboard and
its JSON API call these functions and never query on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from fleetscope import accounting, proof, states
from fleetscope.rollups import floor_bucket, node_hourly_sql
from fleetscope.snapshot import OPEN_FINDINGS_SQL, RUNNING_JOBS_SQL, fleet_counts, snapshot_transaction
from fleetscope.times import format_time
from fleetscope.uptime import FIRST_REPORT_SQL

if TYPE_CHECKING:
    import psycopg

# Per GPU claim at %(at)s: its node's state and its own. A claim is online
# when its node is online and the UUID is in the node's latest healthy set
# and not lost; a node's running jobs cover gpu_count of its claims, online
# ones first, then by UUID in byte order (the snapshot's ranking, so the
# per-GPU states add up to its counts); flagged when an open finding names
# the UUID (on any node) or the whole node; verified when not flagged and it
# passed a proof of GPU in the last 24 h (proof.PROVED_CLAIM_SQL).
GPU_CLAIMS_SQL = """
WITH ns AS MATERIALIZED ({node_state}),
running AS ({running}), open_findings AS MATERIALIZED ({open_findings}), claims AS (
    SELECT g.node_id, g.gpu_uuid, g.gpu_index, coalesce(g.model, 'unknown') AS model, g.memory_total_bytes,
           g.shared, {proved} AS checked,
           coalesce(ns.online AND g.gpu_uuid = ANY(ns.healthy)
                    AND NOT g.gpu_uuid = ANY(coalesce(ns.lost, '{{}}')), false) AS gpu_online,
           r.gpus AS hired_gpus
      FROM gpus g JOIN ns USING (node_id) LEFT JOIN running r USING (node_id)
     WHERE g.first_seen <= %(at)s
), ranked AS (
    SELECT c.*, coalesce(row_number() OVER (PARTITION BY node_id ORDER BY gpu_online DESC, gpu_uuid COLLATE "C")
                         <= hired_gpus, false) AS covered
      FROM claims c
)
SELECT r.node_id, r.gpu_uuid, r.gpu_index, r.model, r.memory_total_bytes, r.shared, r.gpu_online, r.covered,
       (fu.gpu_uuid IS NOT NULL OR fn.node_id IS NOT NULL) AS flagged, r.checked
  FROM ranked r
  LEFT JOIN (SELECT DISTINCT gpu_uuid FROM open_findings WHERE gpu_uuid IS NOT NULL) fu USING (gpu_uuid)
  LEFT JOIN (SELECT DISTINCT node_id FROM open_findings WHERE gpu_uuid IS NULL) fn USING (node_id)
 ORDER BY r.node_id, r.gpu_index NULLS LAST, r.gpu_uuid COLLATE "C"
""".format(node_state=states.NODE_STATE_SQL, running=RUNNING_JOBS_SQL, open_findings=OPEN_FINDINGS_SQL,
           proved=proof.PROVED_CLAIM_SQL)

# Every node registered by %(at)s with its state inputs. NODE_STATE_SQL gives
# last_ok only within the grace (that is all "online" needs); for a node that
# is offline, its last successful observation at or before %(at)s, if any
# (states.LAST_OK_SQL: bounded by the hourly rollup, not a scan through every
# failure since), tells "down" from "new" and is shown as "last seen".
# COALESCE evaluates it only where NODE_STATE_SQL left last_ok NULL.
NODES_SQL = """
WITH ns AS MATERIALIZED ({node_state})
SELECT n.node_id, n.name, o.name AS operator, n.interval_s, n.grace_s, n.registered_at, n.paused,
       coalesce(ns.last_ok, {last_ok}) AS last_ok, ns.online
  FROM ns JOIN nodes n USING (node_id) JOIN operators o USING (operator_id)
 ORDER BY n.node_id
""".format(node_state=states.NODE_STATE_SQL, last_ok=states.LAST_OK_SQL.format(node_id="n.node_id"))


def gpu_state(*, online: bool, covered: bool) -> str:
    """One GPU claim's state: hired, idle, hired_offline or offline (DESIGN.md, Definitions)."""
    if online:
        return "hired" if covered else "idle"
    return "hired_offline" if covered else "offline"


def verification(*, checked: bool, flagged: bool) -> str:
    """flagged (an open finding), verified (a passed proof of GPU in the last 24 h), else unverified."""
    if flagged:
        return "flagged"
    return "verified" if checked else "unverified"


# Columns of the node and GPU tables, in the order of their tuples.
NODE_COLUMNS = ("node_id", "name", "operator", "status", "online", "last_ok", "interval_s", "grace_s",
                "registered_at", "paused", "gpus", "gpus_online", "gpus_hired", "models", "flagged")
GPU_COLUMNS = ("gpu_uuid", "node_id", "node_name", "operator", "gpu_index", "model", "memory_gib", "state",
               "verification", "shared", "node_status")


@dataclass(frozen=True)
class FleetTables:
    """The node and GPU tables at one as-of time: tuples in NODE_COLUMNS / GPU_COLUMNS order."""

    as_of: datetime
    nodes: list[tuple]
    gpus: list[tuple]


def fleet_tables(conn: psycopg.Connection, *, at: datetime) -> FleetTables:
    """Every node and every GPU claim with its state at ``at``.

    Runs in one repeatable-read transaction so the two tables agree; ``conn``
    must not be inside a transaction.
    """
    at = at.astimezone(timezone.utc)
    with snapshot_transaction(conn):
        node_rows = conn.execute(NODES_SQL, {"at": at}).fetchall()
        claim_rows = conn.execute(GPU_CLAIMS_SQL, {"at": at}).fetchall()
    info = {}
    for node_id, name, operator, interval_s, grace_s, registered_at, paused, last_ok, online in node_rows:
        status = states.node_status(last_ok=last_ok, interval_s=interval_s, grace_s=grace_s, at=at)
        info[node_id] = [node_id, name, operator, str(status), bool(online), last_ok, interval_s, grace_s,
                         registered_at, paused, 0, 0, 0, set(), 0]
    gpus = []
    for node_id, uuid, index, model, memory, shared, online, covered, flagged, checked in claim_rows:
        node = info[node_id]
        state = gpu_state(online=online, covered=covered)
        gpus.append((uuid, node_id, node[1], node[2], index, model,
                     None if memory is None else round(memory / 2**30, 1), state,
                     verification(checked=checked, flagged=flagged), shared, node[3]))
        node[10] += 1
        node[11] += online
        node[12] += state == "hired"
        node[13].add(model)
        node[14] += flagged
    nodes = [tuple(row[:13]) + (", ".join(sorted(row[13])), row[14]) for row in info.values()]
    return FleetTables(as_of=at, nodes=nodes, gpus=gpus)


FINDINGS_SQL = """
SELECT f.finding_id, f.kind, f.node_id, n.name, f.gpu_uuid, f.evidence, f.first_seen, f.last_seen,
       f.resolved_at, f.resolution, count(*) OVER () AS total
  FROM integrity_findings f LEFT JOIN nodes n USING (node_id)
 WHERE f.first_seen <= %(at)s
   AND (%(kind)s::text IS NULL OR f.kind = %(kind)s)
   AND (%(node_id)s::bigint IS NULL OR f.node_id = %(node_id)s)
   AND (NOT %(open_only)s OR f.resolved_at IS NULL OR f.resolved_at > %(at)s)
 ORDER BY (f.resolved_at IS NULL OR f.resolved_at > %(at)s) DESC, f.first_seen DESC, f.finding_id DESC
 LIMIT %(limit)s OFFSET %(offset)s
"""


def findings(conn: psycopg.Connection, *, at: datetime, kind: str | None = None, node_id: int | None = None,
             open_only: bool = False, limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """(total, page) of integrity findings first seen by ``at``; open ones first, newest first."""
    rows = conn.execute(FINDINGS_SQL, {"at": at, "kind": kind, "node_id": node_id, "open_only": open_only,
                                       "limit": limit, "offset": offset}).fetchall()
    total = rows[0][-1] if rows else 0
    items = [{"finding_id": r[0], "kind": r[1], "node_id": r[2], "node_name": r[3], "gpu_uuid": r[4],
              "evidence": r[5], "first_seen": format_time(r[6]), "last_seen": format_time(r[7]),
              "open": r[8] is None or r[8] > at,
              "resolved_at": None if r[8] is None or r[8] > at else format_time(r[8]), "resolution": r[9]}
             for r in rows]
    if not rows and offset:
        total = conn.execute("SELECT count(*) FROM integrity_findings f WHERE f.first_seen <= %(at)s"
                             " AND (%(kind)s::text IS NULL OR f.kind = %(kind)s)"
                             " AND (%(node_id)s::bigint IS NULL OR f.node_id = %(node_id)s)"
                             " AND (NOT %(open_only)s OR f.resolved_at IS NULL OR f.resolved_at > %(at)s)",
                             {"at": at, "kind": kind, "node_id": node_id, "open_only": open_only}).fetchone()[0]
    return total, items



def fleet_point(conn: psycopg.Connection, *, at: datetime) -> dict[str, Any]:
    """One point of the fleet-over-time chart: the snapshot's own counts at ``at``."""
    counts = fleet_counts(conn, at=at)
    return {"as_of": counts["as_of"], "nodes": counts["nodes"], "gpus": counts["gpus"]}


def daily_accrual(conn: psycopg.Connection, *, at: datetime, days: int) -> list[dict[str, Any]]:
    """GPU-hours and accrued revenue per UTC day for the last ``days`` days; today runs to ``at``."""
    today = at.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    for back in range(days - 1, -1, -1):
        start = today - timedelta(days=back)
        end = min(start + timedelta(days=1), at)
        acc = accounting.accrual(conn, start=start, end=end)
        out.append({"day": start.date().isoformat(), "gpu_hours": float(acc.gpu_hours),
                    "revenue_usd": float(acc.revenue_usd), "partial": end < start + timedelta(days=1)})
    return out


def node_hourly(conn: psycopg.Connection, node_id: int, *, at: datetime, hours: int, mode: str,
                interval_s: int) -> list[dict[str, Any]]:
    """The node's hourly rollup over the last ``hours`` hours up to ``at``: slots seen ok of slots.

    The current hour is included with the slots elapsed so far as its
    denominator (its rows may run a few seconds past ``at``), and the hour of
    the node's first report with the slots from that report's slot on
    (fleetscope/uptime.py: uptime counts from the first report).
    """
    first_report = conn.execute("SELECT " + FIRST_REPORT_SQL.format(node_id="%(node_id)s"),
                                {"node_id": node_id}).fetchone()[0]
    current = floor_bucket(at)
    we = current + timedelta(hours=1)
    ws = current - timedelta(hours=hours - 1)
    rows = conn.execute(f"SELECT bucket, ok_slots, observations, failed FROM ({node_hourly_sql(mode)}) h"
                        " WHERE node_id = %(node_id)s ORDER BY bucket",
                        {"ws": ws, "we": we, "node_id": node_id}).fetchall()
    per_hour = 3600 // interval_s
    def slots(bucket: datetime) -> int:
        start = max(bucket, floor_slot(first_report, interval_s)) if first_report else bucket
        end = min(bucket + timedelta(hours=1), at + timedelta(seconds=interval_s)) if bucket == current \
            else bucket + timedelta(hours=1)
        return max(1, min(per_hour, int((end - start).total_seconds()) // interval_s))

    return [{"hour": format_time(b), "ok_slots": ok, "slots": slots(b), "observations": obs, "failed": failed}
            for b, ok, obs, failed in rows]


def floor_slot(t: datetime, interval_s: int) -> datetime:
    """The start of the slot holding ``t`` (fleetscope/uptime.py's grid)."""
    return datetime.fromtimestamp(int(t.timestamp()) // interval_s * interval_s, timezone.utc)


TELEMETRY_SQL = """
SELECT gpu_uuid, time_bucket(make_interval(secs => %(step)s), time) AS t,
       avg(gpu_util), avg(temp_c), avg(power_w), avg(fb_used_mib)
  FROM gpu_samples
 WHERE node_id = %(node_id)s AND time > %(since)s AND time <= %(at)s
 GROUP BY gpu_uuid, t ORDER BY gpu_uuid, t
"""


def node_telemetry(conn: psycopg.Connection, node_id: int, *, at: datetime, span: timedelta,
                   step_s: int) -> dict[str, dict[str, list]]:
    """Per GPU, averaged telemetry series over ``span`` before ``at`` in ``step_s`` buckets."""
    rows = conn.execute(TELEMETRY_SQL, {"node_id": node_id, "since": at - span, "at": at, "step": step_s}).fetchall()
    series: dict[str, dict[str, list]] = {}
    for uuid, t, util, temp, power, fb in rows:
        s = series.setdefault(uuid, {"time": [], "gpu_util": [], "temp_c": [], "power_w": [], "fb_used_mib": []})
        s["time"].append(format_time(t))
        s["gpu_util"].append(util)
        s["temp_c"].append(temp)
        s["power_w"].append(power)
        s["fb_used_mib"].append(fb)
    return series


# -- proofs of GPU (fleetscope/proof.py) ---------------------------------------------------------

PROOF_COLUMNS = ("round_id", "node_id", "node_name", "gpu_uuid", "model", "verdict", "reason", "seconds", "tflops",
                 "n", "k", "budget_s", "offered_at", "decided_at")
PROOFS_SQL = """
SELECT p.round_id, p.node_id, n.name, p.gpu_uuid, p.model, p.verdict, p.reason, p.seconds, p.tflops,
       p.n, p.k, p.budget_s, p.offered_at, p.decided_at, count(*) OVER () AS total
  FROM proof_challenges p JOIN nodes n USING (node_id)
 WHERE p.verdict IS NOT NULL AND p.decided_at <= %(at)s
   AND (%(node_id)s::bigint IS NULL OR p.node_id = %(node_id)s)
   AND (%(verdict)s::text IS NULL OR p.verdict = %(verdict)s)
 ORDER BY p.decided_at DESC, p.round_id DESC, p.node_id, p.gpu_uuid COLLATE "C"
 LIMIT %(limit)s OFFSET %(offset)s
"""
# Each GPU claim's latest decided proof at %(at)s.
LATEST_PROOFS_SQL = """
SELECT DISTINCT ON (p.gpu_uuid) p.round_id, p.node_id, n.name, p.gpu_uuid, p.model, p.verdict, p.reason,
       p.seconds, p.tflops, p.n, p.k, p.budget_s, p.offered_at, p.decided_at
  FROM proof_challenges p JOIN nodes n USING (node_id)
 WHERE p.node_id = %(node_id)s AND p.verdict IS NOT NULL AND p.decided_at <= %(at)s
 ORDER BY p.gpu_uuid, p.decided_at DESC
"""
# Verdicts of the last 24 h at %(at)s, and the latest round.
PROOF_SUMMARY_SQL = """
SELECT count(*) FILTER (WHERE verdict = 'passed'), count(*) FILTER (WHERE verdict = 'failed'),
       count(*) FILTER (WHERE verdict = 'no_answer'), count(DISTINCT round_id),
       (SELECT max(opened_at) FROM proof_rounds WHERE opened_at <= %(at)s)
  FROM proof_challenges
 WHERE verdict IS NOT NULL AND decided_at > %(at)s - interval '24 hours' AND decided_at <= %(at)s
"""


def _proof_item(row: tuple) -> dict[str, Any]:
    item = dict(zip(PROOF_COLUMNS, row[:len(PROOF_COLUMNS)], strict=True))
    for name in ("offered_at", "decided_at"):
        item[name] = format_time(item[name])
    return item


def proofs(conn: psycopg.Connection, *, at: datetime, node_id: int | None = None, verdict: str | None = None,
           limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """(total, page) of decided proofs of GPU by ``at``, newest first."""
    rows = conn.execute(PROOFS_SQL, {"at": at, "node_id": node_id, "verdict": verdict, "limit": limit,
                                     "offset": offset}).fetchall()
    return (rows[0][-1] if rows else 0), [_proof_item(r) for r in rows]


def latest_proofs(conn: psycopg.Connection, node_id: int, *, at: datetime) -> dict[str, dict[str, Any]]:
    """Each of the node's GPU claims' latest decided proof at ``at``, by UUID (none: never challenged)."""
    return {r[3]: _proof_item(r) for r in conn.execute(LATEST_PROOFS_SQL, {"node_id": node_id, "at": at})}


def proof_summary(conn: psycopg.Connection, *, at: datetime) -> dict[str, Any]:
    """The last 24 h of proofs of GPU: verdicts by kind, rounds, and when the latest round opened."""
    passed, failed, no_answer, rounds, last = conn.execute(PROOF_SUMMARY_SQL, {"at": at}).fetchone()
    return {"passed": passed, "failed": failed, "no_answer": no_answer, "rounds": rounds,
            "last_round_at": format_time(last) if last else None}
