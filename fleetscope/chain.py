"""Snapshot publication: a hash chain of published snapshots, each with its data bundle (issue 6).

Every publication period (hourly by default) the collector's maintenance
loop calls ``publish_due``: the fleet snapshot as of the period's start is
computed, the data behind it exported into a bundle (fleetscope/bundle.py,
docs/bundle.md), the per-node uptimes and reputations computed from that
data, and the whole bundle verified in-process exactly as ``fleetscope
verify`` will (a bundle that would not verify is never published: if rows
landed between the snapshot and the export, it is built again). Then the
chain record is stored:

    published.json = canonical JSON {"published_version", "as_of", "prev_sha256",
                                     "manifest_sha256", "snapshot"}
    sha256         = SHA-256 of published.json, stored in published_snapshots

so each hash covers the previous one, the bundle's manifest (which covers
every data member) and the snapshot. ``list_published`` and ``bundle_file``
are what the dashboard's /api/v1/snapshots and bundle download read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetscope import bundle, slot_runs, verify
from fleetscope.snapshot import canonical_json, fleet_snapshot, stored_snapshot
from fleetscope.times import format_time

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("fleetscope.chain")

PUBLISHED_VERSION = 1
DEFAULT_PERIOD = timedelta(hours=1)
# A period's snapshot is published this long after the period starts, so the
# rows timed before it are written (the writer flushes within a second; the
# snapshot's own tick settles in 5 s: fleetscope/snapshot.py).
SETTLE = timedelta(seconds=30)
# Build attempts before giving up on a period (each retry follows rows that
# landed between the snapshot and the export).
ATTEMPTS = 3
# Only one publisher at a time, across collector replicas (any constant; the
# migrations use 0x666C6565).
ADVISORY_LOCK_KEY = 0x666C6566


@dataclass(frozen=True)
class Published:
    """One published snapshot."""

    snapshot_id: int
    as_of: datetime
    sha256: str
    prev_sha256: str | None
    snapshot_sha256: str
    bundle_path: Path


def due_as_of(now: datetime, *, period: timedelta = DEFAULT_PERIOD) -> datetime:
    """The as-of time of the latest period whose snapshot may be published at ``now`` (period starts, UTC)."""
    seconds = int(period.total_seconds())
    settled = int((now - SETTLE).timestamp())
    return datetime.fromtimestamp(settled // seconds * seconds, timezone.utc)


def bundle_name(as_of: datetime, sha256: str) -> str:
    return f"fleetscope-bundle-{as_of.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{sha256[:12]}.zip"


def build(conn: psycopg.Connection, *, as_of: datetime, prev_sha256: str | None) -> dict[str, bytes]:
    """Every file of the bundle as of ``as_of``, verified; raises RuntimeError if it never verifies."""
    for attempt in range(1, ATTEMPTS + 1):
        # First the tick's stored snapshot (what every surface showed); if rows
        # landed since (a job posted late), the bundle does not verify with it,
        # and the snapshot is computed afresh from what the bundle holds.
        snap = stored_snapshot(conn, as_of=as_of) if attempt == 1 else fleet_snapshot(conn, as_of=as_of)
        files = bundle.export(conn, at=as_of)
        files[bundle.SNAPSHOT] = canonical_json(snap.as_dict())
        # The per-node numbers are computed from the same rows the bundle carries
        # (parsing wants every member present: an empty placeholder first).
        files[bundle.NUMBERS] = b"{}"
        files[bundle.NUMBERS] = canonical_json(verify.node_numbers(_parsed(files, as_of, snap.sha256, prev_sha256)))
        files = _sealed(files, as_of=as_of, snapshot_sha256=snap.sha256, prev_sha256=prev_sha256,
                        snapshot=snap.as_dict())
        report = verify.verify_data(bundle.parse(files))
        if report.ok:
            return files
        log.warning("bundle for %s did not verify (attempt %d): %s", format_time(as_of), attempt,
                    ", ".join([n.name for n in report.mismatches[:5]]
                              + [f"{what}: {detail}" for what, ok, detail in report.integrity if not ok][:5]))
    raise RuntimeError(f"the bundle for {format_time(as_of)} did not verify after {ATTEMPTS} attempts")


def _sealed(members: dict[str, bytes], *, as_of: datetime, snapshot_sha256: str, prev_sha256: str | None,
            snapshot: dict[str, Any]) -> dict[str, bytes]:
    data = {k: v for k, v in members.items() if k not in (bundle.MANIFEST, bundle.PUBLISHED)}
    manifest = bundle.manifest(data, at=as_of, snapshot_sha256=snapshot_sha256)
    record = {"published_version": PUBLISHED_VERSION, "as_of": format_time(as_of), "prev_sha256": prev_sha256,
              "manifest_sha256": hashlib.sha256(manifest).hexdigest(), "snapshot": snapshot}
    return {**data, bundle.MANIFEST: manifest, bundle.PUBLISHED: canonical_json(record)}


def _parsed(files: dict[str, bytes], as_of: datetime, snapshot_sha256: str,
            prev_sha256: str | None) -> bundle.BundleData:
    snapshot = json.loads(files[bundle.SNAPSHOT])
    return bundle.parse(_sealed(files, as_of=as_of, snapshot_sha256=snapshot_sha256, prev_sha256=prev_sha256,
                                snapshot=snapshot))


def publish(conn: psycopg.Connection, *, as_of: datetime, bundle_dir: Path) -> Published | None:
    """Publish the snapshot as of ``as_of`` with its bundle in ``bundle_dir``; None when there is nothing to do.

    Nothing is done when ``as_of`` is already published, when a later one is
    (the chain only grows forward), or when another process is publishing.
    ``conn`` is an autocommit connection outside any transaction.
    """
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0]:
        return None
    try:
        latest = conn.execute("SELECT as_of, sha256 FROM published_snapshots ORDER BY as_of DESC LIMIT 1").fetchone()
        if latest is not None and latest[0] >= as_of:
            return None
        prev = latest[1] if latest else None
        slot_runs.refresh(conn, up_to=as_of)
        files = build(conn, as_of=as_of, prev_sha256=prev)
        body = files[bundle.PUBLISHED]
        sha = hashlib.sha256(body).hexdigest()
        bundle_dir.mkdir(parents=True, exist_ok=True)
        path = bundle_dir / bundle_name(as_of, sha)
        bundle.write(path, files, at=as_of)
        snapshot_sha = json.loads(files[bundle.SNAPSHOT])["snapshot_sha256"]
        row = conn.execute(
            "INSERT INTO published_snapshots (as_of, sha256, prev_sha256, body, bundle_path)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING snapshot_id",
            (as_of, sha, prev, body.decode(), str(path))).fetchone()
        return Published(snapshot_id=row[0], as_of=as_of, sha256=sha, prev_sha256=prev,
                         snapshot_sha256=snapshot_sha, bundle_path=path)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def publish_due(conn: psycopg.Connection, *, now: datetime, bundle_dir: Path,
                period: timedelta = DEFAULT_PERIOD) -> Published | None:
    """Publish the latest due period's snapshot if it is not published yet (the maintenance loop's step)."""
    return publish(conn, as_of=due_as_of(now, period=period), bundle_dir=bundle_dir)


LIST_SQL = """
SELECT snapshot_id, as_of, sha256, prev_sha256, body::jsonb -> 'snapshot' ->> 'snapshot_sha256',
       body::jsonb ->> 'manifest_sha256', bundle_path, published_at
  FROM published_snapshots ORDER BY as_of DESC LIMIT %(limit)s OFFSET %(offset)s
"""


def list_published(conn: psycopg.Connection, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Published snapshots, newest first: what /api/v1/snapshots lists.

    Each: snapshot_id, as_of, sha256 (of the chain record), prev_sha256,
    snapshot_sha256, manifest_sha256, bundle (its file name, or None when the
    file is gone), bundle_bytes, published_at.
    """
    rows = conn.execute(LIST_SQL, {"limit": max(0, min(limit, 1000)), "offset": max(0, offset)}).fetchall()
    out = []
    for sid, as_of, sha, prev, snap_sha, manifest_sha, path, published_at in rows:
        file = Path(path) if path else None
        present = file is not None and file.is_file()
        out.append({"snapshot_id": sid, "as_of": format_time(as_of), "sha256": sha, "prev_sha256": prev,
                    "snapshot_sha256": snap_sha, "manifest_sha256": manifest_sha,
                    "bundle": file.name if present else None,
                    "bundle_bytes": file.stat().st_size if present else None,
                    "published_at": format_time(published_at)})
    return out


def bundle_file(conn: psycopg.Connection, snapshot_id: int) -> Path | None:
    """The bundle file of a published snapshot, or None when there is no such snapshot or file."""
    row = conn.execute("SELECT bundle_path FROM published_snapshots WHERE snapshot_id = %s",
                       (snapshot_id,)).fetchone()
    if row is None or not row[0]:
        return None
    path = Path(row[0])
    return path if path.is_file() else None


def chain_problems(conn: psycopg.Connection) -> list[str]:
    """Breaks in the hash chain, oldest first; empty when every record hashes to its sha256 and links to the last."""
    problems = []
    prev: str | None = None
    for sid, sha, prev_sha, body in conn.execute(
            "SELECT snapshot_id, sha256, prev_sha256, body FROM published_snapshots ORDER BY as_of"):
        if hashlib.sha256(body.encode()).hexdigest() != sha:
            problems.append(f"snapshot {sid}: its record does not hash to its sha256")
        record_prev = json.loads(body).get("prev_sha256")
        if prev_sha != prev or record_prev != prev:
            problems.append(f"snapshot {sid}: prev_sha256 {prev_sha} does not name the previous record {prev}")
        prev = sha
    return problems
