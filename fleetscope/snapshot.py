"""The fleet snapshot: every headline number, computed once, hashed (DESIGN.md).

``fleet_snapshot`` computes, in one repeatable-read read-only transaction,
nodes and GPUs by state, by model, GPU-hours and revenue for the last 24 h
and in total, integrity counts, and the consistency checks, as of one
instant. Its canonical JSON (sorted keys, no whitespace, UTF-8) is hashed with
SHA-256; the dashboard, the JSON API, the collector's /metrics and the CLI all
show this same object, so they cannot disagree.

The as-of time defaults to the start of the latest settled SNAPSHOT_TICK_S
tick, so every surface asking within one tick gets the same snapshot and hash.

Each settled tick is computed once and stored (``stored_snapshot``, the
fleet_snapshots table): the collector's maintenance loop stores every tick as
it settles, and any reader that finds its tick missing computes and stores it
under the tick's lock, so a dashboard alone still works and two processes
never compute one tick twice. Readers show the stored bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from fleetscope import accounting, proof, states
from fleetscope.config import PriceBounds
from fleetscope.migrate import database_mode
from fleetscope.rollups import floor_bucket, node_hourly_sql
from fleetscope.times import format_time

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("fleetscope.snapshot")

SNAPSHOT_VERSION = 1
# What a stored snapshot was computed under (fleet_snapshots.versions).
STORED_VERSIONS = f"s{SNAPSHOT_VERSION}d{states.DEFINITION_VERSION}"
# The lock class of a tick being computed for storage (any constant; the
# migrations use 0x666C6565, publication 0x666C6566).
STORE_LOCK_CLASS = 0x666C6567
# Stored ticks are kept this long (the maintenance loop prunes older ones):
# every surface shows the current tick; published snapshots keep their own.
STORED_KEEP = timedelta(days=2)
# One tick = the default node interval: states cannot move faster than nodes report.
SNAPSHOT_TICK_S = 15
# A tick is computed only this long after it starts: rows timed before it are
# committed by then (the writer flushes every 0.25 s), so every surface that
# computes a tick, at whatever moment, reads the same rows and shows the same
# hash. (Jobs the marketplace posts later than their start still change past
# ticks: published snapshots, which store the computed bytes, fix those.)
SNAPSHOT_SETTLE_S = 5
LAST_24H = timedelta(hours=24)
SNAPSHOT_WORK_MEM = "64MB"
# How many offending nodes a failed check names in its detail.
DETAIL_EXAMPLES = 5

# GPU states at %(at)s (DESIGN.md, Definitions), counted two ways that agree:
#
# - A node whose GPUs all have one model and none is claimed by another node
#   (gpus.shared) is counted per node, from sizes alone: online GPUs are the
#   size of its healthy set when it is online (the set names only its own
#   registered GPUs, each once: node_gpu_sets_check), a running job covers
#   gpu_count of its GPUs online ones first, so hired = min(J, online) and
#   hired_offline = min(J - online, offline) when J exceeds online.
# - Every other node's GPUs are counted per UUID: a UUID claimed by several
#   nodes is one GPU, online if any claim is, hired if an online claim is
#   covered (a node's GPUs are ranked online first, then by UUID in byte
#   order: COLLATE "C", so the result does not depend on the server's
#   locale), hired_offline if no claim is online and one is covered; its model
#   is the least of its claims' models in byte order.
#
# A GPU claim is verified when it passed a proof of GPU in the last 24 h
# (proof.PROVED_CLAIM_SQL) and nothing flags it; flagged when an open finding names
# its UUID (a failed latest proof opens one, proof_failed) or its whole node;
# else unverified.
#
# The first way touches one row per node instead of one per GPU, which is most
# of the snapshot's cost at 80,000 GPUs (bench/bench_snapshot.py); the second
# keeps the exact per-UUID rules where UUIDs or models need them. Property
# tests hold both to an oracle on random fleets.
# GPUs hired per node at %(at)s: the running jobs' gpu_count, summed.
RUNNING_JOBS_SQL = """
    SELECT node_id, sum(gpu_count) AS gpus FROM jobs
     WHERE started_at <= %(at)s AND (ended_at IS NULL OR ended_at > %(at)s)
     GROUP BY node_id
"""
# Integrity findings open at %(at)s: what flags a GPU (its UUID) or a whole node (gpu_uuid NULL).
OPEN_FINDINGS_SQL = """
    SELECT node_id, gpu_uuid FROM integrity_findings
     WHERE first_seen <= %(at)s AND (resolved_at IS NULL OR resolved_at > %(at)s)
"""
GPU_FIELDS = ("registered", "online", "offline", "hired", "hired_offline", "idle",
              "verified", "unverified", "flagged")
COUNTS_SQL = """
WITH ns AS MATERIALIZED ({node_state}),
running AS ({running}), open_findings AS MATERIALIZED ({open_findings}), shape AS MATERIALIZED (
    SELECT g.node_id, count(*) AS n, count(*) FILTER (WHERE {proved}) AS checked,
           min(coalesce(g.model, 'unknown') COLLATE "C") AS model,
           min(coalesce(g.model, 'unknown') COLLATE "C") = max(coalesce(g.model, 'unknown') COLLATE "C")
               AND NOT bool_or(g.shared) AS simple
      FROM gpus g WHERE g.first_seen <= %(at)s
     GROUP BY g.node_id
), uuid_flagged AS (
    SELECT g.node_id, count(*) AS flagged, count(*) FILTER (WHERE {proved}) AS flagged_checked
      FROM (SELECT DISTINCT gpu_uuid FROM open_findings WHERE gpu_uuid IS NOT NULL) f
      JOIN gpus g USING (gpu_uuid)
     WHERE g.first_seen <= %(at)s
     GROUP BY g.node_id
), per_node AS (
    SELECT sh.model, sh.n, sh.checked, coalesce(r.gpus, 0) AS j,
           CASE WHEN NOT ns.online OR ns.healthy IS NULL THEN 0
                WHEN cardinality(ns.lost) = 0 THEN cardinality(ns.healthy)
                ELSE (SELECT count(*) FROM unnest(ns.healthy) AS h WHERE h <> ALL (ns.lost)) END AS o,
           nf.node_id IS NOT NULL AS node_flag,
           coalesce(uf.flagged, 0) AS uflag, coalesce(uf.flagged_checked, 0) AS uflag_checked
      FROM shape sh JOIN ns USING (node_id)
      LEFT JOIN running r USING (node_id) LEFT JOIN uuid_flagged uf USING (node_id)
      LEFT JOIN (SELECT DISTINCT node_id FROM open_findings WHERE gpu_uuid IS NULL) nf USING (node_id)
     WHERE sh.simple
), claims AS MATERIALIZED (
    SELECT g.node_id, g.gpu_uuid, g.model, {proved} AS checked,
           coalesce(ns.online AND g.gpu_uuid = ANY(ns.healthy)
                    AND NOT g.gpu_uuid = ANY(coalesce(ns.lost, '{{}}')), false) AS gpu_online,
           r.gpus AS hired_gpus
      FROM gpus g JOIN shape sh USING (node_id) JOIN ns USING (node_id) LEFT JOIN running r USING (node_id)
     WHERE g.first_seen <= %(at)s AND NOT sh.simple
), ranked AS (
    SELECT node_id, gpu_uuid, model, checked, gpu_online,
           coalesce(row_number() OVER (PARTITION BY node_id ORDER BY gpu_online DESC, gpu_uuid COLLATE "C")
                    <= hired_gpus, false) AS covered
      FROM claims
), flagged AS (
    SELECT gpu_uuid FROM open_findings WHERE gpu_uuid IS NOT NULL
    UNION
    SELECT r.gpu_uuid FROM ranked r JOIN open_findings f ON f.node_id = r.node_id AND f.gpu_uuid IS NULL
), per_uuid AS (
    SELECT min(coalesce(r.model, 'unknown') COLLATE "C") AS model,
           bool_or(r.gpu_online) AS online,
           bool_or(r.gpu_online AND r.covered) AS hired,
           NOT bool_or(r.gpu_online) AND bool_or(r.covered) AS hired_offline,
           bool_or(r.checked) AS checked,
           bool_or(f.gpu_uuid IS NOT NULL) AS flagged
      FROM ranked r LEFT JOIN flagged f USING (gpu_uuid)
     GROUP BY r.gpu_uuid
), counted AS (
    SELECT model, n AS registered, o AS online, n - o AS offline, least(j, o) AS hired,
           least(greatest(j - o, 0), n - o) AS hired_offline, o - least(j, o) AS idle,
           CASE WHEN node_flag THEN 0 ELSE checked - uflag_checked END AS verified,
           CASE WHEN node_flag THEN 0 ELSE n - checked - (uflag - uflag_checked) END AS unverified,
           CASE WHEN node_flag THEN n ELSE uflag END AS flagged
      FROM per_node
    UNION ALL
    SELECT model, 1, online::int, (NOT online)::int, hired::int, hired_offline::int, (online AND NOT hired)::int,
           (checked AND NOT flagged)::int, (NOT checked AND NOT flagged)::int, flagged::int
      FROM per_uuid
)
SELECT 'gpus' AS kind, NULL AS model,
       coalesce(sum(registered), 0)::bigint, coalesce(sum(online), 0)::bigint, coalesce(sum(offline), 0)::bigint,
       coalesce(sum(hired), 0)::bigint, coalesce(sum(hired_offline), 0)::bigint, coalesce(sum(idle), 0)::bigint,
       coalesce(sum(verified), 0)::bigint, coalesce(sum(unverified), 0)::bigint, coalesce(sum(flagged), 0)::bigint
  FROM counted
UNION ALL
SELECT 'model', model, sum(registered)::bigint, sum(online)::bigint, NULL, sum(hired)::bigint,
       NULL, NULL, NULL, NULL, NULL
  FROM counted GROUP BY model
UNION ALL
SELECT 'nodes', NULL, count(*), count(*) FILTER (WHERE online), count(*) FILTER (WHERE NOT online),
       NULL, NULL, NULL, NULL, NULL, NULL
  FROM ns
""".format(node_state=states.NODE_STATE_SQL, running=RUNNING_JOBS_SQL, open_findings=OPEN_FINDINGS_SQL,
           proved=proof.PROVED_CLAIM_SQL)

FINDINGS_SQL = """
SELECT kind, count(*) FROM integrity_findings
 WHERE first_seen <= %(at)s AND (resolved_at IS NULL OR resolved_at > %(at)s)
 GROUP BY kind ORDER BY kind
"""

# The hired-vs-online check, per node that had jobs in the window: online
# GPU-hours are ok slots x interval x the node's registered GPUs (an upper
# bound; a node cannot sell more GPU-hours than it was seen online for).
HIRED_VS_ONLINE_SQL = """
WITH hired AS ({hired}),
online AS (
    SELECT node_id, sum(ok_slots) AS ok_slots FROM ({rollup}) h
     WHERE node_id IN (SELECT node_id FROM hired) GROUP BY node_id
), gpu_n AS (
    SELECT node_id, count(*) AS n FROM gpus
     WHERE first_seen <= %(at)s AND node_id IN (SELECT node_id FROM hired) GROUP BY node_id
)
SELECT hired.node_id, round(hired.gpu_hours, 6),
       round(coalesce(online.ok_slots, 0) * n.interval_s * coalesce(gpu_n.n, 0) / 3600.0, 6) AS online_hours
  FROM hired JOIN nodes n USING (node_id)
  LEFT JOIN online USING (node_id) LEFT JOIN gpu_n USING (node_id)
 WHERE hired.gpu_hours > coalesce(online.ok_slots, 0) * n.interval_s * coalesce(gpu_n.n, 0) / 3600.0 + 0.000001
 ORDER BY hired.node_id
"""


@dataclass(frozen=True)
class Snapshot:
    """A computed snapshot: the object, its canonical JSON bytes and its hash."""

    body: dict[str, Any]
    canonical: bytes
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        """The object every surface shows: the body plus ``snapshot_sha256``."""
        return {**self.body, "snapshot_sha256": self.sha256}


def default_as_of(now: datetime | None = None) -> datetime:
    """The start of the latest settled snapshot tick (UTC, whole seconds)."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    seconds = int(now.timestamp() - SNAPSHOT_SETTLE_S) // SNAPSHOT_TICK_S * SNAPSHOT_TICK_S
    return datetime.fromtimestamp(seconds, timezone.utc)


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes that are hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def _number(value: Decimal | int) -> float | int:
    """A JSON number with a stable rendering: integers stay integers."""
    if isinstance(value, int):
        return value
    return int(value) if value == value.to_integral_value() else float(value)


def fleet_snapshot(conn: psycopg.Connection, *, as_of: datetime | None = None,
                   price_bounds: PriceBounds | None = None,
                   workers: Sequence[psycopg.Connection] = ()) -> Snapshot:
    """Compute the fleet snapshot as of ``as_of`` (default: the current tick).

    ``conn`` must not be inside a transaction: the snapshot opens its own,
    repeatable-read and read-only. With ``workers`` (other connections to the
    same database, idle), parts of the computation run on them in parallel,
    each in a transaction that imports the main transaction's snapshot
    (pg_export_snapshot, as pg_dump -j does): every part reads exactly the
    same data, so the result is identical to the sequential one.
    """
    from psycopg.pq import TransactionStatus

    for c in (conn, *workers):
        if c.info.transaction_status != TransactionStatus.IDLE:
            raise ValueError("fleet_snapshot opens its own repeatable-read transaction; "
                             "call it on connections that are not inside one")
    at = (as_of or default_as_of()).astimezone(timezone.utc)
    bounds = price_bounds or PriceBounds.from_env()
    with snapshot_transaction(conn):
        mode = database_mode(conn) or "plain"
        # Two independent halves of similar cost (bench/bench_snapshot.py);
        # with a worker they run side by side.
        first = partial(_counts_and_total, at=at)
        second = partial(_day_and_checks, at=at, mode=mode)
        if workers:
            snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            with ThreadPoolExecutor(max_workers=1) as pool:
                future = pool.submit(_in_snapshot, workers[0], snapshot_id, second)
                rows, total = first(conn)
                day, findings, over, window = future.result()
        else:
            rows, total = first(conn)
            day, findings, over, window = second(conn)

    nodes, gpus, by_model = _counts_from_rows(rows)
    body: dict[str, Any] = {
        "snapshot_version": SNAPSHOT_VERSION,
        "definitions_version": states.DEFINITION_VERSION,
        "as_of": format_time(at),
        "nodes": nodes,
        "gpus": gpus,
        "by_model": by_model,
        "gpu_hours": {"last_24h": _number(day.gpu_hours), "total": _number(total.gpu_hours)},
        "revenue_usd": {"last_24h": _number(day.revenue_usd), "total": _number(total.revenue_usd)},
        "integrity": {"open_findings": sum(findings.values()), "by_kind": findings},
    }
    body["checks"] = consistency_checks(body, day=day, over=over, window=window, bounds=bounds)
    canonical = canonical_json(body)
    return Snapshot(body=body, canonical=canonical, sha256=hashlib.sha256(canonical).hexdigest())


def fleet_counts(conn: psycopg.Connection, *, at: datetime) -> dict[str, Any]:
    """Nodes and GPUs by state and by model at ``at``: the snapshot's counts alone.

    The same statement as the snapshot's (COUNTS_SQL), for the points of the
    fleet-over-time chart. ``conn`` may be in any transaction state.
    """
    rows = conn.execute(COUNTS_SQL, {"at": at.astimezone(timezone.utc)}).fetchall()
    nodes, gpus, by_model = _counts_from_rows(rows)
    return {"as_of": format_time(at), "nodes": nodes, "gpus": gpus, "by_model": by_model}


def _counts_from_rows(rows: list[tuple]) -> tuple[dict[str, int], dict[str, int], list[dict[str, Any]]]:
    gpus = dict(zip(GPU_FIELDS, next(r[2:] for r in rows if r[0] == "gpus")))
    nodes = dict(zip(("registered", "online", "offline"), next(r[2:5] for r in rows if r[0] == "nodes")))
    by_model = sorted(({"model": r[1], "registered": r[2], "online": r[3], "hired": r[5]}
                       for r in rows if r[0] == "model"), key=lambda m: m["model"])
    return nodes, gpus, by_model


def snapshot_from_dsn(dsn: str, *, as_of: datetime | None = None, connect_timeout: int = 10) -> Snapshot:
    """``fleet_snapshot`` on fresh connections to ``dsn``: a main one and one worker.

    For callers that hold no connection (the CLI, the collector's /metrics);
    the worker halves the time on a server with a core to spare.
    """
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout) as conn, \
            psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout) as worker:
        return fleet_snapshot(conn, as_of=as_of, workers=[worker])


def stored_snapshot(conn: psycopg.Connection, *, as_of: datetime | None = None,
                    workers: Sequence[psycopg.Connection] = (), now: datetime | None = None) -> Snapshot:
    """The snapshot of ``as_of`` (default: the current tick) as stored; computed and stored first if missing.

    A tick not yet settled at ``now`` (rows timed before it may still be
    written) is computed and never stored. A missing tick is computed under
    its advisory lock: a second process missing it at the same moment waits
    and reads the first one's row instead of computing it again. ``conn`` is
    an autocommit connection outside any transaction, as for
    ``fleet_snapshot``. On a read-only server (a replica) the computed
    snapshot is returned unstored.
    """
    import psycopg

    at = (as_of or default_as_of(now)).astimezone(timezone.utc)
    if at > (now or datetime.now(timezone.utc)) - timedelta(seconds=SNAPSHOT_SETTLE_S):
        return fleet_snapshot(conn, as_of=at, workers=workers)
    found = _read_stored(conn, at)
    if found is not None:
        return found
    key = (STORE_LOCK_CLASS, int(at.timestamp()) % 2**31)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
    try:
        found = _read_stored(conn, at)
        if found is not None:
            return found
        return _store(conn, at, fleet_snapshot(conn, as_of=at, workers=workers))
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
        except psycopg.Error:  # the session is gone, and its lock with it
            pass


def stored_sha256(conn: psycopg.Connection, *, as_of: datetime) -> str | None:
    """The stored snapshot hash of ``as_of``, or None when that tick is not stored (yet)."""
    row = conn.execute("SELECT sha256 FROM fleet_snapshots WHERE as_of = %s AND versions = %s",
                       (as_of, STORED_VERSIONS)).fetchone()
    return row[0] if row else None


def stored_snapshot_from_dsn(dsn: str, *, as_of: datetime | None = None, connect_timeout: int = 10) -> Snapshot:
    """``stored_snapshot`` on fresh connections to ``dsn`` (a main one and one worker, as ``snapshot_from_dsn``)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout) as conn:
        at = (as_of or default_as_of()).astimezone(timezone.utc)
        found = _read_stored(conn, at)
        if found is not None:  # the usual case: no second connection needed
            return found
        with psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout) as worker:
            return stored_snapshot(conn, as_of=at, workers=[worker])


def prune_stored(conn: psycopg.Connection, *, now: datetime) -> int:
    """Remove stored ticks older than STORED_KEEP; returns how many."""
    return conn.execute("DELETE FROM fleet_snapshots WHERE as_of < %s", (now - STORED_KEEP,)).rowcount


def _read_stored(conn: psycopg.Connection, at: datetime) -> Snapshot | None:
    row = conn.execute("SELECT body, sha256 FROM fleet_snapshots WHERE as_of = %s AND versions = %s",
                       (at, STORED_VERSIONS)).fetchone()
    if row is None:
        return None
    return Snapshot(body=json.loads(row[0]), canonical=row[0].encode(), sha256=row[1])


def _store(conn: psycopg.Connection, at: datetime, snap: Snapshot) -> Snapshot:
    """Store ``snap`` as the tick's unless one is stored already; returns the stored one."""
    import psycopg

    try:
        body, sha = conn.execute(
            "INSERT INTO fleet_snapshots (as_of, versions, sha256, body) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (as_of, versions) DO UPDATE SET computations = fleet_snapshots.computations + 1"
            " RETURNING body, sha256", (at, STORED_VERSIONS, snap.sha256, snap.canonical.decode())).fetchone()
    except psycopg.errors.ReadOnlySqlTransaction:
        return snap
    if sha != snap.sha256:  # a settled tick computes the same everywhere: say so loudly if not
        log.warning("the snapshot of %s computed here (%s) differs from the stored one (%s); showing the stored one",
                    format_time(at), snap.sha256[:12], sha[:12])
    return Snapshot(body=json.loads(body), canonical=body.encode(), sha256=sha)


@contextmanager
def snapshot_transaction(conn: psycopg.Connection, *, snapshot_id: str | None = None) -> Iterator[None]:
    """The transaction every fleet-wide read runs in: repeatable read, read only, UTC, SNAPSHOT_WORK_MEM.

    The snapshot, the explorer's tables and the history points each read
    in one (so their parts agree); with ``snapshot_id`` (pg_export_snapshot)
    it sees exactly what that other transaction sees. ``conn`` must not be
    inside a transaction.
    """
    from psycopg import sql

    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot_id is not None:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
        # UTC for time_bucket and date arithmetic; enough work_mem that hashing
        # ~100,000 GPUs stays in memory (at the 4 MB default it spills to disk and
        # the snapshot takes a third longer: bench/bench_snapshot.py).
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        conn.execute(f"SET LOCAL work_mem = '{SNAPSHOT_WORK_MEM}'")
        yield


def _in_snapshot(conn: psycopg.Connection, snapshot_id: str, job):
    with snapshot_transaction(conn, snapshot_id=snapshot_id):
        return job(conn)


def _counts_and_total(conn: psycopg.Connection, *, at: datetime) -> tuple[list[tuple], accounting.Accrual]:
    rows = conn.execute(COUNTS_SQL, {"at": at}).fetchall()
    return rows, accounting.accrual(conn, start="-infinity", end=at)


def _day_and_checks(conn: psycopg.Connection, *, at: datetime, mode: str):
    day = accounting.accrual(conn, start=at - LAST_24H, end=at)
    findings = dict(conn.execute(FINDINGS_SQL, {"at": at}).fetchall())
    check_we = floor_bucket(at)
    check_ws = check_we - LAST_24H
    hired_sql = accounting.NODE_WINDOW_SQL.replace("%(start)s", "%(ws)s").replace("%(end)s", "%(we)s")
    over = conn.execute(HIRED_VS_ONLINE_SQL.format(hired=hired_sql, rollup=node_hourly_sql(mode)),
                        {"at": at, "ws": check_ws, "we": check_we}).fetchall()
    return day, findings, over, (check_ws, check_we)


# The consistency checks every snapshot carries, in order (DESIGN.md).
CHECKS = {
    "state_partition": "registered = online + offline and online = hired + idle for nodes and GPUs; "
                       "hired_offline is part of offline; registered = verified + unverified + flagged",
    "no_hired_offline": "no GPU is covered by a running job while offline",
    "models_sum_to_total": "the sums over GPU models equal the totals (registered, online, hired)",
    "hired_hours_within_online_hours": "over the last 24 whole hours, no node's hired GPU-hours exceed its "
                                       "online GPU-hours (ok slots x interval x registered GPUs)",
    "implied_price_within_bounds": "revenue / GPU-hours over the last 24 h lies within the configured bounds "
                                   "(FLEETSCOPE_PRICE_MIN, FLEETSCOPE_PRICE_MAX)",
}


def consistency_checks(body: dict[str, Any], *, day: accounting.Accrual, over: list[tuple],
                       window: tuple[datetime, datetime], bounds: PriceBounds) -> list[dict[str, Any]]:
    """The consistency checks of one snapshot, each {name, ok, detail}; failures are kept, never dropped."""
    nodes, gpus, by_model = body["nodes"], body["gpus"], body["by_model"]
    checks = []

    def check(name: str, ok: bool, detail: str) -> None:
        if name not in CHECKS:
            raise KeyError(f"check {name!r} is not described in CHECKS")
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    partition = (
        nodes["registered"] == nodes["online"] + nodes["offline"]
        and gpus["registered"] == gpus["online"] + gpus["offline"]
        and gpus["online"] == gpus["hired"] + gpus["idle"]
        and 0 <= gpus["hired_offline"] <= gpus["offline"]
        and gpus["registered"] == gpus["verified"] + gpus["unverified"] + gpus["flagged"]
        and min(gpus.values()) >= 0
    )
    check("state_partition", partition,
          f"GPUs: registered {gpus['registered']} = online {gpus['online']} + offline {gpus['offline']}; "
          f"online {gpus['online']} = hired {gpus['hired']} + idle {gpus['idle']}; "
          f"hired_offline {gpus['hired_offline']} within offline; "
          f"verified {gpus['verified']} + unverified {gpus['unverified']} + flagged {gpus['flagged']}; "
          f"nodes: registered {nodes['registered']} = online {nodes['online']} + offline {nodes['offline']}")
    check("no_hired_offline", gpus["hired_offline"] == 0,
          f"{gpus['hired_offline']} GPUs are covered by a running job while offline")
    sums = {k: sum(m[k] for m in by_model) for k in ("registered", "online", "hired")}
    check("models_sum_to_total", all(sums[k] == gpus[k] for k in sums),
          "; ".join(f"{k}: models {sums[k]} vs total {gpus[k]}" for k in sums))
    examples = ", ".join(f"node {r[0]} hired {r[1]} > online {r[2]} GPU-h" for r in over[:DETAIL_EXAMPLES])
    check("hired_hours_within_online_hours", not over,
          f"window {format_time(window[0])} to {format_time(window[1])}: "
          + (f"{len(over)} nodes sold more GPU-hours than they were online: {examples}" if over
             else "every node's hired GPU-hours are within its online GPU-hours"))
    if day.gpu_hours > 0:
        price = day.revenue_usd / day.gpu_hours
        check("implied_price_within_bounds", bounds.low <= price <= bounds.high,
              f"last 24 h: {day.revenue_usd} USD / {day.gpu_hours} GPU-h = {price:.4f} USD/GPU-h, "
              f"bounds [{bounds.low}, {bounds.high}]")
    else:
        check("implied_price_within_bounds", True, "no GPU-hours in the last 24 h")
    return checks
