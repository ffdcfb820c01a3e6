"""The jobs ledger API: ``POST /api/v1/jobs`` from the marketplace (admin token).

An upsert by ``job_id``, so the marketplace can post a job when it starts and
again when it ends, and retry either safely: posting the same body twice
leaves one row, untouched the second time (the UPDATE skips a row whose
fields are all the same, so ``updated_at`` only moves when something did).
201 when the job is new, 200 when it existed.

Every field is checked here against the jobs table's constraints
(fleetscope/migrations/0001_core.sql) so that bad input is a 400 naming the
field, never a database error; money arrives as a JSON number or string and
is kept as a Decimal, never a float.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import psycopg
from aiohttp import web

from collector.requests import R_UNKNOWN_NODE, Rejected, bad_field, int_field, read_json_object, str_field
from fleetscope.times import format_time

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psycopg_pool import AsyncConnectionPool

    from collector.auth import Authenticator

STATUSES = ("running", "succeeded", "failed")
MAX_JOB_ID_LEN = 200
# gpu_count is an integer column; no single host has more GPUs than this.
MAX_GPU_COUNT = 65536
# price_per_gpu_hour is numeric(14, 6): at most 8 digits before the point.
MAX_PRICE = Decimal("99999999.999999")
PRICE_QUANTUM = Decimal("0.000001")
MAX_NODE_ID = 2**63 - 1

UPSERT_SQL = """
INSERT INTO jobs AS j (job_id, node_id, gpu_count, price_per_gpu_hour, started_at, ended_at, status)
VALUES (%(job_id)s, %(node_id)s, %(gpu_count)s, %(price)s, %(started_at)s, %(ended_at)s, %(status)s)
ON CONFLICT (job_id) DO UPDATE
   SET node_id = EXCLUDED.node_id, gpu_count = EXCLUDED.gpu_count,
       price_per_gpu_hour = EXCLUDED.price_per_gpu_hour, started_at = EXCLUDED.started_at,
       ended_at = EXCLUDED.ended_at, status = EXCLUDED.status, updated_at = now()
 WHERE (j.node_id, j.gpu_count, j.price_per_gpu_hour, j.started_at, j.ended_at, j.status)
       IS DISTINCT FROM (EXCLUDED.node_id, EXCLUDED.gpu_count, EXCLUDED.price_per_gpu_hour,
                         EXCLUDED.started_at, EXCLUDED.ended_at, EXCLUDED.status)
RETURNING (xmax = 0) AS inserted
"""


def parse_time(name: str, value: Any) -> datetime:
    """An ISO 8601 time with a zone (``Z`` or an offset); a 400 naming ``name`` otherwise."""
    if not isinstance(value, str):
        raise bad_field(name, "must be an ISO 8601 time string with a zone")
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad_field(name, f"{value[:60]!r} is not an ISO 8601 time") from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise bad_field(name, f"{value[:60]!r} has no zone; add Z or an offset such as +00:00")
    return t


def parse_price(value: Any) -> Decimal:
    """A non-negative amount of USD per GPU-hour with at most six decimals."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise bad_field("price_per_gpu_hour", "must be a number (or a decimal string)")
    try:
        price = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise bad_field("price_per_gpu_hour", f"{str(value)[:40]!r} is not a number") from None
    if not price.is_finite() or not Decimal(0) <= price <= MAX_PRICE:
        raise bad_field("price_per_gpu_hour", f"must be between 0 and {MAX_PRICE}, got {str(value)[:40]}")
    if price != price.quantize(PRICE_QUANTUM):
        raise bad_field("price_per_gpu_hour", "must have at most 6 decimal places")
    return price


def parse_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """The job's fields, checked; raises a 400 naming the first bad one."""
    job = {
        "job_id": str_field(body, "job_id", max_len=MAX_JOB_ID_LEN),
        "node_id": int_field(body, "node_id", lo=1, hi=MAX_NODE_ID),
        "gpu_count": int_field(body, "gpu_count", lo=1, hi=MAX_GPU_COUNT),
        "price": parse_price(body.get("price_per_gpu_hour")) if "price_per_gpu_hour" in body
        else _missing("price_per_gpu_hour"),
        "started_at": parse_time("started_at", body.get("started_at")),
        "ended_at": None if body.get("ended_at") is None else parse_time("ended_at", body["ended_at"]),
        "status": body.get("status"),
    }
    if job["status"] not in STATUSES:
        raise bad_field("status", f"must be one of {', '.join(STATUSES)}")
    if (job["status"] == "running") != (job["ended_at"] is None):
        raise bad_field("status", "a job is running exactly when it has no ended_at")
    if job["ended_at"] is not None and job["ended_at"] < job["started_at"]:
        raise bad_field("ended_at", "must not be before started_at")
    return job


def _missing(name: str) -> Decimal:
    raise bad_field(name, "is required")


class JobLedger:
    """Upserts jobs posted by the admin role."""

    def __init__(self, *, pool: AsyncConnectionPool, auth: Authenticator, max_json_bytes: int) -> None:
        self._pool = pool
        self._auth = auth
        self._max_json_bytes = max_json_bytes

    async def post(self, request: web.Request) -> web.Response:
        self._auth.admin(request)
        job = parse_job(await read_json_object(request, max_bytes=self._max_json_bytes))
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(UPSERT_SQL, job)).fetchone()
        except psycopg.errors.ForeignKeyViolation:
            raise Rejected(404, R_UNKNOWN_NODE, f"node {job['node_id']} does not exist") from None
        created = bool(row and row[0])
        return web.json_response({
            "job_id": job["job_id"], "created": created, "node_id": job["node_id"],
            "status": job["status"], "started_at": format_time(job["started_at"]),
            "ended_at": None if job["ended_at"] is None else format_time(job["ended_at"]),
        }, status=201 if created else 200)
