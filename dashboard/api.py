"""The read-only JSON API (DESIGN.md, Contract: Dashboard HTTP).

Each endpoint returns the very object the matching page renders, from the
same ``Service`` (dashboard/service.py); list endpoints page, sort and
filter server-side and also answer in CSV (``format=csv``) for downloads.
Bad parameters get a 400 with the reason; unknown nodes a 404.

Proofs of GPU (issue 14): ``/nodes/{id}`` carries ``proofs``, each GPU
claim's latest decided proof by UUID (null: never challenged);
``/proofs?node_id=&verdict=&limit=&offset=`` lists every decided proof,
newest first, with the last 24 h's counts (``last_24h``); ``/integrity``
carries those counts as ``proofs_24h``.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

import psycopg
from flask import Blueprint, Response, current_app, request, send_file
from psycopg_pool import PoolTimeout

from fleetscope import chain, methodology, numbers, proof, series
from fleetscope.explorer import PROOF_COLUMNS
from fleetscope.integrity import FINDING_KINDS
from fleetscope.snapshot import SNAPSHOT_TICK_S
from fleetscope.times import format_time

from dashboard.format import parse_id
from dashboard.service import GPUS, NODES, TELEMETRY_STEP_S, dumps
from dashboard.tables import BadParameter, TableSpec, as_json, parse_query, select

if TYPE_CHECKING:
    from dashboard.service import Service

api = Blueprint("api", __name__, url_prefix="/api/v1")
PROOF_CSV_COLUMNS = PROOF_COLUMNS  # an item's keys, in order (fleetscope/explorer.py)


def service() -> Service:
    return current_app.config["FLEETSCOPE_EXPLORER"]


def _json(obj: Any, status: int = 200, *, cache_s: int = SNAPSHOT_TICK_S) -> Response:
    response = Response(dumps(obj), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = f"public, max-age={cache_s}" if status == 200 else "no-store"
    return response


def error(status: int, code: str, reason: str) -> Response:
    return _json({"error": code, "reason": reason}, status)


@api.errorhandler(BadParameter)
def _bad_parameter(err: BadParameter) -> Response:
    return error(400, "bad_parameter", str(err))


# Told to clients while the database is unreachable (a restart takes seconds).
DATABASE_RETRY_AFTER_S = 5


@api.errorhandler(psycopg.OperationalError)
@api.errorhandler(PoolTimeout)
def database_unavailable(err: Exception) -> Response:
    """The database is restarting or away: a JSON 503 with Retry-After, never a 500 (issue 15); the pages'
    error handler (dashboard/app.py) answers with it too."""
    current_app.logger.warning("API %s: database unavailable: %s", request.path, " ".join(str(err).split())[:200])
    response = error(503, "database_unavailable", "the database is unavailable; retry later")
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


@api.errorhandler(Exception)
def _internal_error(err: Exception) -> Response:
    """Anything else unexpected: logged with its traceback, answered in JSON like every API error."""
    from werkzeug.exceptions import HTTPException

    if isinstance(err, HTTPException):
        return error(err.code or 500, "http_error", err.description or "")
    current_app.logger.exception("API %s failed", request.path)
    return error(500, "internal_error", "internal error")


@api.errorhandler(404)
def _not_found(_err) -> Response:
    return error(404, "not_found", f"no such resource: {request.path}")


@api.errorhandler(405)
def _not_allowed(_err) -> Response:
    return error(405, "method_not_allowed", "the API is read-only: GET only")


@api.get("/fleet")
def fleet() -> Response:
    snap = service().snapshot()
    response = _json(snap.as_dict())
    response.headers["X-Snapshot-SHA256"] = snap.sha256
    return response


@api.get("/fleet/history")
def fleet_history() -> Response:
    ex = service()
    at = ex.tick()  # one as-of time for every part of the answer
    snap = ex.snapshot(as_of=at)
    return _json({"as_of": snap.body["as_of"], "snapshot_sha256": snap.sha256, "points": ex.history(as_of=at),
                  "fleet_jumps": ex.fleet_jumps(as_of=at)})


@api.get("/fleet/daily")
def fleet_daily() -> Response:
    ex = service()
    at = ex.tick()
    snap = ex.snapshot(as_of=at)
    return _json({"as_of": snap.body["as_of"], "snapshot_sha256": snap.sha256, "days": ex.daily(as_of=at)})


def _range(args) -> series.Range:
    """The ``range`` parameter (24h, 7d or 30d; default 24h) and no other."""
    unknown = sorted(set(args) - {"range"})
    if unknown:
        raise BadParameter(f"unknown parameter {unknown[0]!r}; allowed: range")
    try:
        return series.get_range(args.get("range"))
    except KeyError:
        raise BadParameter(f"range must be one of {', '.join(series.RANGES)}") from None


@api.get("/fleet/series")
def fleet_series() -> Response:
    """The overview's charts over ``range``: the fleet's counts at each point, GPU-hours and revenue per
    bucket, fleet jumps and our outages, and the spans of simulated history in view."""
    rng = _range(request.args)
    ex = service()
    at = ex.tick()
    snap = ex.snapshot(as_of=at)
    return _json({"snapshot_sha256": snap.sha256, **ex.fleet_series(rng, as_of=at)})


@api.get("/checks/<name>/nodes")
def check_nodes(name: str) -> Response:
    """The nodes that make a consistency check of the current snapshot fail (empty when it holds)."""
    if request.args:
        raise BadParameter(f"unknown parameter {sorted(request.args)[0]!r}")
    ex = service()
    at = ex.tick()
    snap = ex.snapshot(as_of=at)
    check = next((c for c in snap.body["checks"] if c["name"] == name), None)
    if check is None:
        return error(404, "not_found", f"no check {name[:60]!r}")
    return _json({"as_of": snap.body["as_of"], "snapshot_sha256": snap.sha256, "check": name, "ok": check["ok"],
                  "nodes": ex.check_nodes(name, as_of=at)})


def _table(spec: TableSpec, rows_name: str, text_name: str) -> Response:
    query = parse_query(spec, request.args)
    ex = service()
    tables = ex.tables()
    snap = ex.snapshot(as_of=tables.as_of)
    rows = select(spec, getattr(tables, rows_name), getattr(tables, text_name), query, tables.orders[spec.name])
    if request.args.get("format") == "csv":
        return _csv(spec, rows, f"fleetscope-{spec.name}-{snap.body['as_of']}.csv")
    if request.args.get("format") not in (None, "", "json"):
        raise BadParameter("format must be json or csv")
    return _json({"as_of": snap.body["as_of"], "snapshot_sha256": snap.sha256, "total": len(rows),
                  "limit": query.limit, "offset": query.offset, "sort": query.sort,
                  "order": "desc" if query.descending else "asc",
                  "items": _scored(spec, [as_json(spec, r) for r in rows[query.offset:query.offset + query.limit]],
                                   ex, tables.as_of)})


def _scored(spec: TableSpec, items: list[dict[str, Any]], ex: Service, at) -> list[dict[str, Any]]:
    """Node items with uptime_24h, uptime_7d and reputation: the values of /api/v1/nodes/{id} (Service.node_scores)."""
    if spec is not NODES:
        return items
    scores = ex.node_scores([item["node_id"] for item in items], as_of=at)
    return [{**item, **scores[item["node_id"]]} for item in items]


def _csv(spec: TableSpec, rows: list[tuple], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(spec.columns)
    for row in rows:
        writer.writerow([_cell(v) for v in as_json(spec, row).values()])
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _cell(value):
    # Operators name their nodes: a name a spreadsheet would run as a formula
    # is written as text (OWASP, CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@api.get("/nodes")
def nodes() -> Response:
    return _table(NODES, "nodes", "node_text")


@api.get("/gpus")
def gpus() -> Response:
    return _table(GPUS, "gpus", "gpu_text")


@api.get("/nodes/<node_id>")
def node(node_id: str) -> Response:
    if request.args:
        raise BadParameter(f"unknown parameter {sorted(request.args)[0]!r}")
    nid = parse_id(node_id)
    detail = service().node(nid) if nid is not None else None
    if detail is None:
        return error(404, "not_found", f"no node {node_id[:40]!r}")
    return _json(detail)


@api.get("/nodes/<node_id>/<part>")
def node_part(node_id: str, part: str) -> Response:
    """A node's hourly rollup (``history``), its GPU telemetry (``telemetry``) or its charts over
    ``range`` (``series``: uptime bars, utilisation, reputation points, annotations)."""
    nid = parse_id(node_id)
    ex = service()
    at = ex.tick()
    if nid is None or nid not in ex.tables(as_of=at).node_rows or part not in ("history", "telemetry", "series"):
        return error(404, "not_found", f"no such resource: {request.path[:80]}")
    if part == "series":
        return _json(ex.node_series(nid, _range(request.args), as_of=at))
    if part == "history":
        return _json({"node_id": nid, "as_of": format_time(at), "hours": ex.node_history(nid, as_of=at)})
    return _json({"node_id": nid, "as_of": format_time(at), "step_s": TELEMETRY_STEP_S,
                  "gpus": ex.node_telemetry(nid, as_of=at)})


@api.get("/integrity")
def integrity() -> Response:
    args = request.args
    unknown = sorted(set(args) - {"kind", "open", "limit", "offset", "format"})
    if unknown:
        raise BadParameter(f"unknown parameter {unknown[0]!r}; allowed: format, kind, limit, offset, open")
    kind = args.get("kind") or None
    if kind is not None and kind not in FINDING_KINDS:
        raise BadParameter(f"kind must be one of {', '.join(FINDING_KINDS)}, got {kind[:40]!r}")
    open_raw = args.get("open", "false")
    if open_raw not in ("true", "false"):
        raise BadParameter(f"open must be true or false, got {open_raw[:40]!r}")
    limit = _bounded(args, "limit", 100, 1, 1000)
    offset = _bounded(args, "offset", 0, 0, 10**9)
    body = service().integrity(kind=kind, open_only=open_raw == "true", limit=limit, offset=offset)
    if args.get("format") == "csv":
        out = io.StringIO()
        columns = ("finding_id", "kind", "node_id", "node_name", "gpu_uuid", "open", "first_seen", "last_seen",
                   "resolved_at", "resolution", "evidence")
        writer = csv.writer(out)
        writer.writerow(columns)
        for item in body["items"]:
            writer.writerow([json.dumps(item[c]) if c == "evidence" else _cell(item[c]) for c in columns])
        response = Response(out.getvalue(), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="fleetscope-integrity-{body["as_of"]}.csv"'
        return response
    if args.get("format") not in (None, "", "json"):
        raise BadParameter("format must be json or csv")
    return _json(body)


@api.get("/proofs")
def proofs() -> Response:
    """Decided proofs of GPU, newest first, with the last 24 h's counts; by node and verdict, paged."""
    args = request.args
    unknown = sorted(set(args) - {"node_id", "verdict", "limit", "offset", "format"})
    if unknown:
        raise BadParameter(f"unknown parameter {unknown[0]!r}; allowed: format, limit, node_id, offset, verdict")
    node_raw = args.get("node_id") or None
    node_id = parse_id(node_raw) if node_raw is not None else None
    if node_raw is not None and node_id is None:
        raise BadParameter(f"node_id must be a node id (digits), got {node_raw[:40]!r}")
    verdict = args.get("verdict") or None
    if verdict is not None and verdict not in proof.VERDICTS:
        raise BadParameter(f"verdict must be one of {', '.join(proof.VERDICTS)}, got {verdict[:40]!r}")
    limit = _bounded(args, "limit", 100, 1, 1000)
    offset = _bounded(args, "offset", 0, 0, 10**9)
    fmt = args.get("format")
    if fmt not in (None, "", "json", "csv"):
        raise BadParameter("format must be json or csv")
    body = service().proofs(node_id=node_id, verdict=verdict, limit=limit, offset=offset)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(PROOF_CSV_COLUMNS)
        for item in body["items"]:
            writer.writerow([_cell(item[c]) for c in PROOF_CSV_COLUMNS])
        response = Response(out.getvalue(), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="fleetscope-proofs-{body["as_of"]}.csv"'
        return response
    return _json(body)


def _bounded(args, name: str, default: int, lo: int, hi: int) -> int:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    value = numbers.parse_int(raw, lo=lo, hi=hi)
    if isinstance(value, numbers.Problem):
        raise BadParameter(f"{name} must be an integer between {lo} and {hi}, got {raw[:40]!r}")
    return value


@api.get("/methodology")
def methodology_json() -> Response:
    return _json(methodology.definitions(), cache_s=3600)


@api.get("/snapshots")
def snapshots() -> Response:
    """The published snapshots (the hourly hash chain), newest first, with their bundles' URLs."""
    unknown = sorted(set(request.args) - {"limit", "offset"})
    if unknown:
        raise BadParameter(f"unknown parameter {unknown[0]!r}; allowed: limit, offset")
    limit = _bounded(request.args, "limit", 50, 1, 1000)
    offset = _bounded(request.args, "offset", 0, 0, 10**9)
    with service().pool().connection() as conn:
        items = chain.list_published(conn, limit=limit, offset=offset)
        problems = chain.chain_problems(conn)
    for item in items:
        item["bundle_url"] = f"/api/v1/snapshots/{item['snapshot_id']}/bundle" if item["bundle"] else None
    return _json({"limit": limit, "offset": offset, "chain_ok": not problems, "chain_problems": problems,
                  "items": items}, cache_s=60)


@api.get("/snapshots/<snapshot_id>/bundle")
def snapshot_bundle(snapshot_id: str) -> Response:
    """A published snapshot's data bundle (zip): what ``fleetscope verify BUNDLE`` recomputes."""
    sid = parse_id(snapshot_id)
    path = None
    if sid is not None:
        with service().pool().connection() as conn:
            path = chain.bundle_file(conn, sid)
    if path is None:
        return error(404, "not_found", f"no bundle for published snapshot {snapshot_id[:40]!r}")
    response = send_file(path, mimetype="application/zip", as_attachment=True, download_name=path.name, max_age=86400)
    return response
