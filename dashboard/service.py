"""The explorer's data, per snapshot tick, shared by every page and the API.

Pages and API handlers ask the ``Service`` for the current tick's snapshot,
tables, history and node details; it computes each at most once per tick for
all worker processes (dashboard/cache.py) by calling ``fleetscope/``
functions, which own every definition. The page and the API therefore render
the very same objects, with the same hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fleetscope import __version__, check_nodes, explorer, proof, series, simulated, snapshot, states
from fleetscope.migrate import database_mode
from fleetscope.reputation import FORMULA_VERSION, node_reputation
from fleetscope.times import format_time, parse_time

from dashboard.cache import SharedCache
from dashboard.tables import TableSpec, haystacks

# A request waits at most this long for a pooled connection, and a new
# connection at most CONNECT_TIMEOUT_S, before the API answers 503 (issue 15).
POOL_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


NODE_STATUSES = ("new", "up", "late", "down")
GPU_STATES = ("hired", "idle", "hired_offline", "offline")
VERIFICATIONS = ("verified", "unverified", "flagged")
NODES = TableSpec("nodes", explorer.NODE_COLUMNS, search=("name", "operator", "models", "node_id"),
                  exact={"status": NODE_STATUSES}, default_sort="node_id")
GPUS = TableSpec("gpus", explorer.GPU_COLUMNS, search=("gpu_uuid", "node_name", "model", "operator"),
                 exact={"state": GPU_STATES, "verification": VERIFICATIONS, "node_status": NODE_STATUSES},
                 default_sort="node_id")

# The fleet-over-time chart: a point every 15 minutes over the last 24 hours,
# each the snapshot's own counts at that time. A past point never changes
# (its tick is settled), so each is computed once and kept for a day.
HISTORY_SPAN = timedelta(hours=24)
HISTORY_STEP = timedelta(minutes=15)
HISTORY_KEEP_S = 26 * 3600
DAILY_DAYS = 30
TELEMETRY_SPAN = timedelta(hours=24)
TELEMETRY_STEP_S = 300
NODE_HISTORY_HOURS = 7 * 24


@dataclass(frozen=True)
class Tables:
    as_of: datetime
    nodes: list[tuple]
    gpus: list[tuple]
    node_text: list[str]
    gpu_text: list[str]
    node_rows: dict[int, int]              # node_id -> index in nodes
    gpu_rows: dict[int, tuple[int, int]]   # node_id -> [start, end) in gpus
    # Sort orders computed so far in this process, per table: dashboard/tables.py.
    orders: dict[str, dict] = field(default_factory=lambda: {"nodes": {}, "gpus": {}}, compare=False)


# Connections per worker process: a snapshot takes two, and gunicorn runs
# dashboard/serve.py's DEFAULT_THREADS (8) requests at once in each worker.
POOL_SIZE = 10


def default_cache_dir(dsn: str) -> Path:
    """A per-database directory in the user's own cache directory (never a shared /tmp path)."""
    from platformdirs import user_cache_dir

    digest = hashlib.sha256(dsn.encode()).hexdigest()[:12]
    return Path(user_cache_dir("fleetscope")) / f"dashboard-{digest}"


class Service:
    """Every number the explorer shows, for the current tick, computed once across workers."""

    def __init__(self, dsn: str, *, cache_dir: Path | None = None, pool_size: int = POOL_SIZE,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.dsn = dsn
        self.clock = clock  # benchmarks replay a stored fleet at its own time
        self._cache_root = cache_dir or default_cache_dir(dsn)
        self._cache: SharedCache | None = None
        self._pool_size = pool_size
        self._pool = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
        self._mode: str | None = None

    def _with_conn(self, query: Callable[[Any], Any]) -> Any:
        with self.pool().connection() as conn:
            return query(conn)

    def _cached(self, key: str, query: Callable[[Any], Any]) -> Any:
        """``query(conn)`` on a pooled connection, computed once per key across workers."""
        def compute():
            with self.pool().connection() as conn:
                return query(conn)
        return self.cache.get(key, compute)

    # Connections: one pool per process, opened on first use (after gunicorn forks).
    def pool(self):
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                from psycopg_pool import ConnectionPool

                # check: one empty round trip per checkout, so that after a
                # database restart a stale connection is replaced instead of
                # failing the request (issue 15: AdminShutdown answered 500).
                self._pool = ConnectionPool(self.dsn, min_size=1, max_size=self._pool_size,
                                            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
                                            open=True, name="dashboard", timeout=POOL_TIMEOUT_S,
                                            check=ConnectionPool.check_connection)
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.close()
        self._pool = None

    @property
    def cache(self) -> SharedCache:
        """The shared cache of this database: a directory per database identity.

        The identity is the database's OID and the time its schema was first
        created, so a database dropped and created again under the same DSN
        never sees the values (history points are kept a day) of the old one.
        """
        if self._cache is None:
            with self.pool().connection() as conn:
                oid, born = conn.execute(
                    "SELECT (SELECT oid FROM pg_database WHERE datname = current_database()),"
                    " (SELECT extract(epoch FROM min(applied_at))::bigint FROM schema_migrations)").fetchone()
            # The versions too: values computed under other definitions are never shown.
            versions = (f"s{snapshot.SNAPSHOT_VERSION}d{states.DEFINITION_VERSION}r{FORMULA_VERSION}"
                        f"p{proof.PROTOCOL_VERSION}-{__version__}")
            root = Path(self._cache_root)
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._cache = SharedCache(root / f"db-{oid}-{born}-{versions}")
        return self._cache

    def mode(self) -> str:
        if self._mode is None:
            with self.pool().connection() as conn:
                self._mode = database_mode(conn) or "plain"
        return self._mode

    def tick(self) -> datetime:
        """The as-of time of everything shown now: the snapshot's current settled tick."""
        return snapshot.default_as_of(self.clock())

    # The snapshot: what / and /api/v1/fleet show.
    def snapshot(self, *, as_of: datetime | None = None) -> snapshot.Snapshot:
        at = as_of or self.tick()
        body, canonical, sha = self.cache.get(f"snapshot-{int(at.timestamp())}", lambda: self._snapshot(at))
        return snapshot.Snapshot(body=body, canonical=canonical, sha256=sha)

    def _snapshot(self, at: datetime):
        # The tick's stored snapshot (computed once for every process: fleetscope/snapshot.py).
        with self.pool().connection() as conn, self.pool().connection() as worker:
            snap = snapshot.stored_snapshot(conn, as_of=at, workers=[worker], now=self.clock())
        return snap.body, snap.canonical, snap.sha256

    def snapshot_sha256(self, *, as_of: datetime | None = None) -> str:
        """The hash of the tick's snapshot, read alone (the snapshot is computed only if no one has yet)."""
        at = as_of or self.tick()

        def compute() -> str:
            with self.pool().connection() as conn:
                sha = snapshot.stored_sha256(conn, as_of=at)
            return sha or self.snapshot(as_of=at).sha256
        return self.cache.get(f"sha256-{int(at.timestamp())}", compute)

    # The node and GPU tables of the same tick.
    def tables(self, *, as_of: datetime | None = None) -> Tables:
        at = as_of or self.tick()
        return self.cache.get(f"tables-{int(at.timestamp())}", lambda: self._tables(at))

    def _tables(self, at: datetime) -> Tables:
        with self.pool().connection() as conn:
            t = explorer.fleet_tables(conn, at=at)
        node_rows = {row[0]: i for i, row in enumerate(t.nodes)}
        gpu_rows: dict[int, tuple[int, int]] = {}
        for i, row in enumerate(t.gpus):  # ordered by node_id
            start, _ = gpu_rows.get(row[1], (i, i))
            gpu_rows[row[1]] = (start, i + 1)
        return Tables(as_of=at, nodes=t.nodes, gpus=t.gpus,
                      node_text=haystacks(NODES, t.nodes), gpu_text=haystacks(GPUS, t.gpus),
                      node_rows=node_rows, gpu_rows=gpu_rows)

    # Fleet over time and money per day.
    def history(self, *, as_of: datetime | None = None) -> list[dict[str, Any]]:
        at = as_of or self.tick()
        points = []
        for t in series.grid(at, span=HISTORY_SPAN, step=HISTORY_STEP):
            points.append(self.cache.get(f"point-{int(t.timestamp())}", lambda t=t: self._point(t),
                                         keep_s=HISTORY_KEEP_S))
        return points

    def _point(self, at: datetime) -> dict[str, Any]:
        with self.pool().connection() as conn, snapshot.snapshot_transaction(conn):
            return explorer.fleet_point(conn, at=at)

    def daily(self, *, as_of: datetime | None = None) -> list[dict[str, Any]]:
        at = as_of or self.tick()

        return self._cached(f"daily-{int(at.timestamp())}",
                            lambda conn: explorer.daily_accrual(conn, at=at, days=DAILY_DAYS))

    # Charts by time range (issue 16; fleetscope/series.py).
    def fleet_series(self, rng: series.Range, *, as_of: datetime | None = None) -> dict[str, Any]:
        """The overview's charts over ``rng``: fleet points, money per bucket, annotations, simulated spans."""
        at = as_of or self.tick()
        meta = self._cached(f"fleet-series-{rng.name}-{int(at.timestamp())}", lambda conn: self._fleet_meta(conn, at, rng))
        since = parse_time(meta["since"]) if meta["since"] else at
        points = [self.cache.get(f"point-{int(t.timestamp())}", lambda t=t: self._point(t),
                                 keep_s=rng.span.total_seconds() + 7200)
                  for t in series.grid(at, span=rng.span, step=rng.fleet_step, since=since)]
        return {"as_of": snapshot.format_time(at), "range": rng.name, **meta, "points": points}

    def _fleet_meta(self, conn, at: datetime, rng: series.Range) -> dict[str, Any]:
        since = series.fleet_start(conn)
        start = max(at - rng.span, since) if since else at - rng.span
        return {"since": snapshot.format_time(start),
                "money": series.accrual_series(conn, at=at, rng=rng, since=since),
                "annotations": series.annotations(conn, at=at, start=start),
                "simulated": [s.as_dict() for s in simulated.spans(conn, start=start, end=at)]}

    def node_series(self, node_id: int, rng: series.Range, *, as_of: datetime | None = None) -> dict[str, Any]:
        """A node page's charts over ``rng``: uptime bars, utilisation, reputation points, annotations."""
        at = as_of or self.tick()
        tables = self.tables(as_of=at)
        registered_at = tables.nodes[tables.node_rows[node_id]][NODES.index("registered_at")]
        start = max(at - rng.span, registered_at)

        def meta(conn):
            return {"since": snapshot.format_time(start),
                    "uptime": series.node_uptime_bars(conn, node_id, at=at, rng=rng, registered_at=registered_at),
                    "telemetry": explorer.node_telemetry(conn, node_id, at=at, span=at - start,
                                                         step_s=rng.telemetry_step_s),
                    "telemetry_step_s": rng.telemetry_step_s,
                    "annotations": series.annotations(conn, at=at, start=start),
                    "simulated": [s.as_dict() for s in simulated.spans(conn, start=start, end=at)]}

        out = self._cached(f"node-series-{node_id}-{rng.name}-{int(at.timestamp())}", meta)
        reputation = []
        for t in series.grid(at, span=rng.span, step=rng.reputation_step, since=registered_at):
            # A past point never changes: kept for the range's span.
            point = self.cache.get(f"rep-{node_id}-{int(t.timestamp())}",
                                   lambda t=t: self._with_conn(lambda conn: series.node_reputation_points(
                                       conn, node_id, at=t, times=[t])),
                                   keep_s=rng.span.total_seconds() + 7200)
            reputation.extend(point)
        return {"node_id": node_id, "as_of": snapshot.format_time(at), "range": rng.name, **out,
                "reputation": reputation}

    def simulated(self, *, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """The spans of simulated history up to now (fleetscope/simulated.py): the pages label them."""
        at = as_of or self.tick()
        return self._cached(f"simulated-{int(at.timestamp())}",
                            lambda conn: [s.as_dict() for s in simulated.spans(conn, end=at)])

    def check_nodes(self, name: str, *, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """The nodes behind check ``name`` when it fails in this tick's snapshot ([] when it holds)."""
        at = as_of or self.tick()
        failing = {c["name"] for c in self.snapshot(as_of=at).body["checks"] if not c["ok"]}
        if name not in failing or name not in check_nodes.NODE_CHECKS:
            return []
        mode = self.mode()
        return self._cached(f"check-nodes-{name}-{int(at.timestamp())}",
                            lambda conn: check_nodes.nodes_behind(conn, name, at=at, mode=mode))

    def fleet_jumps(self, *, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """Open and resolved fleet_jump findings of the last day: the chart marks them."""
        at = as_of or self.tick()

        return self._cached(f"jumps-{int(at.timestamp())}",
                            lambda conn: explorer.findings(conn, at=at, kind="fleet_jump", limit=100)[1])

    # One node.
    def node(self, node_id: int, *, as_of: datetime | None = None) -> dict[str, Any] | None:
        """The node's detail as /api/v1/nodes/{id} returns it, or None if no such node."""
        at = as_of or self.tick()
        tables = self.tables(as_of=at)
        index = tables.node_rows.get(node_id)
        if index is None:
            return None

        rep = self.reputation(node_id, as_of=at)
        (total, found), latest = self._cached(
            f"node-{node_id}-{int(at.timestamp())}",
            lambda conn: (explorer.findings(conn, at=at, node_id=node_id, limit=200),
                          explorer.latest_proofs(conn, node_id, at=at)))
        if rep is None:  # removed since the tick's tables were computed
            return None
        from dashboard.tables import as_json

        node = as_json(NODES, tables.nodes[index])
        start, end = tables.gpu_rows.get(node_id, (0, 0))
        gpus = [as_json(GPUS, row) for row in tables.gpus[start:end]]
        for gpu in gpus:
            for key in ("node_id", "node_name", "operator", "node_status"):
                gpu.pop(key)
        return {
            "as_of": format_time(at), "snapshot_sha256": self.snapshot_sha256(as_of=at),
            "node_id": node_id, "name": node["name"], "operator": node["operator"],
            "registered_at": node["registered_at"], "interval_s": node["interval_s"], "grace_s": node["grace_s"],
            "paused": node["paused"],
            "state": {"status": node["status"], "online": node["online"], "last_ok": node["last_ok"]},
            "gpus": gpus,
            "uptime_24h": _uptime(rep.uptime_24h), "uptime_7d": _uptime(rep.uptime_7d),
            "reputation": rep.as_dict(),
            "findings": {"total": total, "items": found},
            "proofs": node_proofs(gpus, latest, at=at),
        }

    def reputation(self, node_id: int, *, as_of: datetime | None = None):
        """The node's reputation with its uptimes (fleetscope.reputation.node_reputation), once per node and tick.

        The node page, /api/v1/nodes/{id}, the /nodes grid and /api/v1/nodes
        all read this one cached value, so they cannot disagree.
        """
        at = as_of or self.tick()
        return self._cached(f"reputation-{node_id}-{int(at.timestamp())}",
                            lambda conn: node_reputation(conn, node_id, at=at))

    def node_scores(self, node_ids, *, as_of: datetime | None = None) -> dict[int, dict[str, Any]]:
        """Per node: ``uptime_24h``, ``uptime_7d`` (ratios) and ``reputation`` (score), as the node's detail has them.

        Computed for the nodes asked for (a page of a table), not the whole
        fleet: each is a node_reputation query of its own.
        """
        at = as_of or self.tick()
        out = {}
        for node_id in node_ids:
            rep = self.reputation(node_id, as_of=at)
            out[node_id] = ({"uptime_24h": rep.uptime_24h.ratio, "uptime_7d": rep.uptime_7d.ratio,
                             "reputation": rep.score} if rep is not None
                            else {"uptime_24h": None, "uptime_7d": None, "reputation": None})
        return out

    def node_history(self, node_id: int, *, as_of: datetime | None = None) -> list[dict[str, Any]]:
        at = as_of or self.tick()
        tables = self.tables(as_of=at)
        row = tables.nodes[tables.node_rows[node_id]]
        mode = self.mode()  # before taking a connection: it takes one of its own the first time
        with self.pool().connection() as conn:
            return explorer.node_hourly(conn, node_id, at=at, hours=NODE_HISTORY_HOURS, mode=mode,
                                        interval_s=row[NODES.index("interval_s")])

    def node_telemetry(self, node_id: int, *, as_of: datetime | None = None) -> dict[str, Any]:
        at = as_of or self.tick()
        with self.pool().connection() as conn:
            return explorer.node_telemetry(conn, node_id, at=at, span=TELEMETRY_SPAN, step_s=TELEMETRY_STEP_S)

    def integrity(self, *, kind: str | None, open_only: bool, limit: int, offset: int,
                  as_of: datetime | None = None) -> dict[str, Any]:
        at = as_of or self.tick()
        snap = self.snapshot(as_of=at)

        total, items = self._cached(
            f"findings-{int(at.timestamp())}-{kind}-{open_only:d}-{limit}-{offset}",
            lambda conn: explorer.findings(conn, at=at, kind=kind, open_only=open_only, limit=limit, offset=offset))
        return {"as_of": snap.body["as_of"], "snapshot_sha256": snap.sha256,
                "open_findings": snap.body["integrity"]["open_findings"],
                "by_kind": snap.body["integrity"]["by_kind"], "checks": snap.body["checks"],
                "gpus": {k: snap.body["gpus"][k] for k in VERIFICATIONS},
                "proofs_24h": self.proof_summary(as_of=at),
                "total": total, "limit": limit, "offset": offset, "items": items}

    def proofs(self, *, node_id: int | None, verdict: str | None, limit: int, offset: int,
               as_of: datetime | None = None) -> dict[str, Any]:
        """A page of decided proofs of GPU (newest first) with the last 24 h's summary, as /api/v1/proofs returns it."""
        at = as_of or self.tick()
        snap = self.snapshot(as_of=at)
        def query(conn):
            total, items = explorer.proofs(conn, at=at, node_id=node_id, verdict=verdict, limit=limit, offset=offset)
            if not items and offset:  # past the end: the total comes with a row, so ask for the first
                total = explorer.proofs(conn, at=at, node_id=node_id, verdict=verdict, limit=1)[0]
            return total, items, self._proof_summary(conn, at)

        total, items, summary = self._cached(f"proofs-{int(at.timestamp())}-{node_id}-{verdict}-{limit}-{offset}",
                                             query)
        return {"as_of": snap.body["as_of"], "snapshot_sha256": snap.sha256,
                "protocol_version": proof.PROTOCOL_VERSION, "last_24h": summary,
                "total": total, "limit": limit, "offset": offset, "items": items}

    def proof_summary(self, *, as_of: datetime | None = None) -> dict[str, Any]:
        """The last 24 h of proofs of GPU: passed, failed, no answer, rounds, the latest round's time."""
        at = as_of or self.tick()
        return self._cached(f"proof-summary-{int(at.timestamp())}", lambda conn: self._proof_summary(conn, at))

    @staticmethod
    def _proof_summary(conn, at: datetime) -> dict[str, Any]:
        return dict(explorer.proof_summary(conn, at=at), window_h=proof.VERIFIED_FOR.total_seconds() / 3600)

    def published(self, *, limit: int = 24) -> list[dict[str, Any]]:
        """The latest published snapshots (issue 6's hourly hash chain)."""
        from fleetscope import chain

        return self._cached(f"published-{int(self.tick().timestamp())}-{limit}",
                            lambda conn: chain.list_published(conn, limit=limit))


def node_proofs(gpus: list[dict[str, Any]], latest: dict[str, dict[str, Any]], *, at: datetime) -> dict[str, Any]:
    """Each of the node's GPU claims' latest decided proof of GPU (None: never challenged), by UUID.

    A passed proof counts towards "verified" until ``valid_until``
    (decided_at + proof.VERIFIED_FOR), unless a finding flags the GPU.
    """
    out: dict[str, Any] = {g["gpu_uuid"]: None for g in gpus}
    for uuid, item in sorted(latest.items()):
        item = {k: v for k, v in item.items() if k not in ("node_id", "node_name", "gpu_uuid")}
        item["valid_until"] = None
        if item["verdict"] == "passed":
            decided = parse_time(item["decided_at"])
            item["valid_until"] = format_time(decided + proof.VERIFIED_FOR)
        out[uuid] = item
    return out


def _uptime(u) -> dict[str, Any]:
    return {"ratio": u.ratio, "window_slots": u.window_slots, "observed_slots": u.observed_slots,
            "ok_slots": u.ok_slots, "excluded_slots": u.excluded_slots}



def dumps(obj: Any) -> str:
    """JSON as the API writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


