"""The published data bundle, format version 1 (docs/bundle.md): writing it from the database, reading it back.

A bundle is a zip of CSV and JSON files holding everything needed to
recompute, with fleetscope's own definitions and nothing else, the numbers
published with one snapshot: node and GPU counts by state and by model,
GPU-hours and revenue (24 h and total), open findings, and every node's
uptimes and reputation, and the proofs of GPU behind "verified" (every
verdict of the last 24 h; the seeds, commitments and openings of those
decided in the last hour, so an hourly bundle carries each round's openings
once). ``manifest.json`` lists each data member's SHA-256;
``published.json`` (the hash-chain record) names the manifest's SHA-256, the
snapshot's and the previous record's. ``export`` reads the data in one
repeatable-read transaction; ``read`` parses a bundle into ``BundleData`` for
``fleetscope verify`` (fleetscope/verify.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetscope import proof, slot_runs
from fleetscope.reputation import U7_WINDOW
from fleetscope.snapshot import canonical_json
from fleetscope.times import format_time, parse_time
from fleetscope.uptime import FIRST_REPORT_SQL

if TYPE_CHECKING:
    import psycopg

BUNDLE_FORMAT = "fleetscope-bundle"
# 2: proofs of GPU (issue 14): proof_rounds.csv, proofs.csv; gpus.csv without checked_at.
# 3: nodes.csv first_report: uptime counts from a node's first report, not its registration (issue 16).
BUNDLE_VERSION = 3
MANIFEST = "manifest.json"
PUBLISHED = "published.json"
SNAPSHOT = "snapshot.json"
NUMBERS = "numbers.json"
# The data members, in the order they are written; each is (name, header).
TABLES: dict[str, tuple[str, ...]] = {
    "nodes.csv": ("node_id", "registered_at", "interval_s", "grace_s", "last_ok", "first_report"),
    "gpu_sets.csv": ("node_id", "since", "healthy", "lost"),
    "gpus.csv": ("node_id", "gpu_uuid", "model", "first_seen", "virtualization_mode",
                 "memory_total_bytes", "sm_count", "max_sm_clock_mhz"),
    "observation_slots.csv": ("node_id", "first_slot", "last_slot"),
    "observing_periods.csv": ("collector_id", "started_at", "last_beat_at"),
    "jobs.csv": ("job_id", "node_id", "gpu_count", "price_per_gpu_hour", "started_at", "ended_at", "status"),
    "findings.csv": ("finding_id", "kind", "node_id", "gpu_uuid", "subject", "first_seen", "last_seen",
                     "resolved_at", "resolution", "evidence"),
    "proof_rounds.csv": ("round_id", "opened_at", "seed", "protocol_version", "scale", "share"),
    "proofs.csv": ("round_id", "node_id", "gpu_uuid", "model", "memory_total_bytes", "n", "k", "reference_tflops",
                   "budget_s",
                   "offered_at", "started_at", "rtt_s", "committed_at", "root", "rows", "columns", "openings",
                   "verdict", "reason", "seconds", "tflops", "decided_at"),
}
# The slots a bundle carries: the longest window any published number reads
# (U7, the 7-day uptime). Jobs are carried whole (revenue "total" is all time).
SLOT_HISTORY = U7_WINDOW
# Proofs: every verdict a published number reads (a pass counts for 24 h),
# and the full record (seed, root, openings) of those decided in the last
# PROOF_DETAIL window: each round's openings are in one hourly bundle.
PROOF_HISTORY = proof.VERIFIED_FOR
PROOF_DETAIL = timedelta(hours=1)

# Every node registered by %(at)s with its latest successful observation at
# or before it (the node-state definition's input: fleetscope/states.py) and
# its first report if made by then (where its uptime starts: fleetscope/uptime.py).
NODES_SQL = """
SELECT n.node_id, n.registered_at, n.interval_s, n.grace_s,
       (SELECT max(o.time) FROM observations o WHERE o.node_id = n.node_id AND o.ok AND o.time <= %(at)s),
       (SELECT fr.t FROM (SELECT {first_report} AS t) fr WHERE fr.t <= %(at)s)
  FROM nodes n WHERE n.registered_at <= %(at)s ORDER BY n.node_id
""".format(first_report=FIRST_REPORT_SQL.format(node_id="n.node_id"))
# The GPU set in force at each node's latest successful observation.
SETS_SQL = """
WITH latest AS ({nodes})
SELECT DISTINCT ON (s.node_id) s.node_id, s.since, s.healthy, s.lost
  FROM node_gpu_sets s JOIN latest l ON l.node_id = s.node_id AND s.since <= l.max
 ORDER BY s.node_id, s.since DESC
""".format(nodes=NODES_SQL.replace("ORDER BY n.node_id", ""))
# A GPU without a reported model is counted under "unknown" (fleetscope/snapshot.py).
GPUS_SQL = """
SELECT node_id, gpu_uuid, coalesce(model, 'unknown'), first_seen, virtualization_mode,
       memory_total_bytes, sm_count, max_sm_clock_mhz
  FROM gpus WHERE first_seen <= %(at)s ORDER BY node_id, gpu_uuid COLLATE "C"
"""
PERIODS_SQL = """
SELECT collector_id, started_at, last_beat_at FROM observing_periods
 WHERE last_beat_at >= %(since)s AND started_at < %(at)s ORDER BY started_at, collector_id
"""
JOBS_SQL = """
SELECT job_id, node_id, gpu_count, price_per_gpu_hour, started_at, ended_at, status
  FROM jobs WHERE started_at <= %(at)s ORDER BY job_id COLLATE "C"
"""
PROOFS_SQL = """
SELECT round_id, node_id, gpu_uuid, model, memory_total_bytes, n, k, reference_tflops, budget_s, offered_at,
       started_at, rtt_s,
       committed_at, root,
       CASE WHEN decided_at > %(detail)s THEN rows END, CASE WHEN decided_at > %(detail)s THEN columns END,
       CASE WHEN decided_at > %(detail)s THEN openings END,
       verdict, reason, seconds, tflops, decided_at
  FROM proof_challenges
 WHERE verdict IS NOT NULL AND decided_at > %(proofs_since)s AND decided_at <= %(at)s
 ORDER BY round_id, node_id, gpu_uuid COLLATE "C"
"""
# A round's seed is published once its challenges are decided (the bundle's proofs are).
ROUNDS_SQL = """
SELECT round_id, opened_at, seed, protocol_version, scale, share FROM proof_rounds
 WHERE round_id IN (SELECT round_id FROM proof_challenges
                     WHERE verdict IS NOT NULL AND decided_at > %(proofs_since)s AND decided_at <= %(at)s)
 ORDER BY round_id
"""
# Findings open at %(at)s: what flags GPUs and what the snapshot counts.
FINDINGS_SQL = """
SELECT finding_id, kind, node_id, gpu_uuid, subject, first_seen, last_seen, resolved_at, resolution, evidence
  FROM integrity_findings
 WHERE first_seen <= %(at)s AND (resolved_at IS NULL OR resolved_at > %(at)s) ORDER BY finding_id
"""


def _cell(value: Any) -> str:
    """One CSV cell: times in ISO 8601 UTC, lists and objects as compact JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv(header: tuple[str, ...], rows: list[tuple]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue().encode()


def export(conn: psycopg.Connection, *, at: datetime) -> dict[str, bytes]:
    """The data members of a bundle as of ``at``, read in one repeatable-read transaction.

    The observation slots come from ``node_slot_runs`` (fleetscope/slot_runs.py):
    call ``slot_runs.refresh(conn, up_to=at)`` first, or the raw rows past its
    watermark are read.
    """
    params = {"at": at, "since": at - SLOT_HISTORY, "proofs_since": at - PROOF_HISTORY, "detail": at - PROOF_DETAIL}
    members: dict[str, bytes] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        conn.execute("SET LOCAL work_mem = '256MB'")
        for name, sql in (("nodes.csv", NODES_SQL), ("gpu_sets.csv", SETS_SQL), ("gpus.csv", GPUS_SQL),
                          ("observation_slots.csv", None), ("observing_periods.csv", PERIODS_SQL),
                          ("jobs.csv", JOBS_SQL), ("findings.csv", FINDINGS_SQL),
                          ("proof_rounds.csv", ROUNDS_SQL), ("proofs.csv", PROOFS_SQL)):
            rows = (slot_runs.runs(conn, since=params["since"], at=at) if sql is None
                    else conn.execute(sql, params).fetchall())
            members[name] = _csv(TABLES[name], rows)
    return members


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(members: dict[str, bytes], *, at: datetime, snapshot_sha256: str) -> bytes:
    """The manifest: format, version, as-of time and each member's SHA-256 and size."""
    from fleetscope import reputation, states

    return canonical_json({
        "bundle_format": BUNDLE_FORMAT, "bundle_version": BUNDLE_VERSION, "as_of": format_time(at),
        "definitions_version": states.DEFINITION_VERSION,
        "reputation_formula_version": reputation.FORMULA_VERSION,
        "snapshot_sha256": snapshot_sha256,
        "members": {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in sorted(members.items())},
    })


def write(path: Path, files: dict[str, bytes], *, at: datetime) -> None:
    """Write ``files`` as a zip at ``path`` (atomically: a reader never sees half a bundle).

    Entries carry the as-of time, not the wall clock, so the same bundle
    written twice is the same bytes.
    """
    stamp = at.astimezone(timezone.utc).timetuple()[:6]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    tmp.replace(path)


# -- reading ---------------------------------------------------------------------------------------------------


def _time(text: str) -> datetime | None:
    return parse_time(text) if text else None


def _int(text: str) -> int | None:
    return int(text) if text else None


def _float(text: str) -> float | None:
    return float(text) if text else None


def _json(text: str) -> Any:
    return json.loads(text) if text else None


@dataclass
class Node:
    node_id: int
    registered_at: datetime
    interval_s: int
    grace_s: int
    last_ok: datetime | None
    first_report: datetime | None  # the node's first successful observation, if by the bundle's time
    healthy: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    runs: list[tuple[int, int]] = field(default_factory=list)  # ok slot runs, ascending


@dataclass
class Gpu:
    node_id: int
    gpu_uuid: str
    model: str | None
    first_seen: datetime
    memory_total_bytes: int | None = None


@dataclass
class ProofRound:
    round_id: int
    opened_at: datetime
    seed: str
    protocol_version: int
    scale: float
    share: float


@dataclass
class Proof:
    """One GPU's proof, as published (proofs.csv); rows, columns and openings only for recent ones."""

    round_id: int
    node_id: int
    gpu_uuid: str
    model: str
    memory_total_bytes: int | None
    n: int
    k: int
    reference_tflops: float
    budget_s: float
    offered_at: datetime
    started_at: datetime | None
    rtt_s: float | None
    committed_at: datetime | None
    root: str | None
    rows: list[int] | None
    columns: list[int] | None
    openings: list[dict[str, Any]] | None
    verdict: str
    reason: str | None
    seconds: float | None
    tflops: float | None
    decided_at: datetime


@dataclass
class Job:
    job_id: str
    node_id: int
    gpu_count: int
    price_per_gpu_hour: Decimal
    started_at: datetime
    ended_at: datetime | None
    status: str


@dataclass
class Finding:
    kind: str
    node_id: int | None
    gpu_uuid: str | None
    first_seen: datetime
    resolved_at: datetime | None


@dataclass
class BundleData:
    """A bundle, parsed: the raw members and the tables the recomputation reads."""

    members: dict[str, bytes]
    manifest: dict[str, Any]
    published: dict[str, Any]
    snapshot: dict[str, Any]
    numbers: dict[str, Any]
    at: datetime
    nodes: dict[int, Node]
    gpus: list[Gpu]
    periods: list[tuple[datetime, datetime]]
    jobs: list[Job]
    findings: list[Finding]
    rounds: dict[int, ProofRound] = field(default_factory=dict)
    proofs: list[Proof] = field(default_factory=list)


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def read(path: Path) -> BundleData:
    """Parse the bundle at ``path``. Raises ValueError naming what is missing or malformed."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {name: zf.read(name) for name in zf.namelist()}
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    return parse(members)


def parse(members: dict[str, bytes]) -> BundleData:
    """Parse a bundle's members (name -> bytes). Raises ValueError naming what is missing or malformed."""
    missing = [n for n in (MANIFEST, PUBLISHED, SNAPSHOT, NUMBERS, *TABLES) if n not in members]
    if missing:
        raise ValueError(f"not a fleetscope bundle: {', '.join(missing)} missing")
    man = json.loads(members[MANIFEST])
    if man.get("bundle_format") != BUNDLE_FORMAT or man.get("bundle_version") != BUNDLE_VERSION:
        raise ValueError(f"bundle format {man.get('bundle_format')!r} version {man.get('bundle_version')!r}: "
                         f"this fleetscope reads {BUNDLE_FORMAT!r} version {BUNDLE_VERSION}")
    at = _time(man["as_of"])
    nodes = {}
    for r in _rows(members["nodes.csv"]):
        n = Node(node_id=int(r["node_id"]), registered_at=_time(r["registered_at"]), interval_s=int(r["interval_s"]),
                 grace_s=int(r["grace_s"]), last_ok=_time(r["last_ok"]), first_report=_time(r["first_report"]))
        nodes[n.node_id] = n
    for r in _rows(members["gpu_sets.csv"]):
        node = nodes[int(r["node_id"])]
        node.healthy, node.lost = json.loads(r["healthy"] or "[]"), json.loads(r["lost"] or "[]")
    # The largest member: parsed without DictReader's per-row dict.
    slots = csv.reader(io.StringIO(members["observation_slots.csv"].decode()))
    next(slots)
    for node_id, first, last in slots:
        nodes[int(node_id)].runs.append((int(first), int(last)))
    gpus = [Gpu(node_id=int(r["node_id"]), gpu_uuid=r["gpu_uuid"], model=r["model"] or None,
                first_seen=_time(r["first_seen"]), memory_total_bytes=_int(r["memory_total_bytes"]))
            for r in _rows(members["gpus.csv"])]
    rounds = {int(r["round_id"]): ProofRound(round_id=int(r["round_id"]), opened_at=_time(r["opened_at"]),
                                             seed=r["seed"], protocol_version=int(r["protocol_version"]),
                                             scale=float(r["scale"]), share=float(r["share"]))
              for r in _rows(members["proof_rounds.csv"])}
    proofs = [Proof(round_id=int(r["round_id"]), node_id=int(r["node_id"]), gpu_uuid=r["gpu_uuid"], model=r["model"],
                    memory_total_bytes=_int(r["memory_total_bytes"]), n=int(r["n"]), k=int(r["k"]), reference_tflops=float(r["reference_tflops"]),
                    budget_s=float(r["budget_s"]), offered_at=_time(r["offered_at"]),
                    started_at=_time(r["started_at"]), rtt_s=_float(r["rtt_s"]),
                    committed_at=_time(r["committed_at"]), root=r["root"] or None,
                    rows=_json(r["rows"]), columns=_json(r["columns"]), openings=_json(r["openings"]),
                    verdict=r["verdict"], reason=r["reason"] or None, seconds=_float(r["seconds"]),
                    tflops=_float(r["tflops"]), decided_at=_time(r["decided_at"]))
              for r in _rows(members["proofs.csv"])]
    periods = [(_time(r["started_at"]), _time(r["last_beat_at"])) for r in _rows(members["observing_periods.csv"])]
    jobs = [Job(job_id=r["job_id"], node_id=int(r["node_id"]), gpu_count=int(r["gpu_count"]),
                price_per_gpu_hour=Decimal(r["price_per_gpu_hour"]), started_at=_time(r["started_at"]),
                ended_at=_time(r["ended_at"]), status=r["status"])
            for r in _rows(members["jobs.csv"])]
    findings = [Finding(kind=r["kind"], node_id=_int(r["node_id"]), gpu_uuid=r["gpu_uuid"] or None,
                        first_seen=_time(r["first_seen"]), resolved_at=_time(r["resolved_at"]))
                for r in _rows(members["findings.csv"])]
    return BundleData(members=members, manifest=man, published=json.loads(members[PUBLISHED]),
                      snapshot=json.loads(members[SNAPSHOT]), numbers=json.loads(members[NUMBERS]), at=at,
                      nodes=nodes, gpus=gpus, periods=periods, jobs=jobs, findings=findings, rounds=rounds,
                      proofs=proofs)

