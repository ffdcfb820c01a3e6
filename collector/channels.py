"""Operators' alert channels: ``POST``, ``GET /api/v1/channels`` and ``DELETE /api/v1/channels/{id}`` (operator token).

A channel belongs to the operator whose token created it, and the list shows
the caller's channels only: the operator id comes from the token, never from
the request, so no token can read, add or delete another operator's channels (a delete of
another operator's channel is a 404, as for one that does not exist).
Creating a channel that already exists returns it (200) instead of a second
row, so a retried request is harmless. Targets are checked here (webhook,
Slack and Discord: an http(s) URL with a host; email: a plausible address);
delivering to them is the alert loop's job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from collector.addresses import R_REFUSED_TARGET, AddressPolicy
from collector.requests import R_NOT_FOUND, Rejected, bad_field, email_address, http_url, read_json_object, str_field
from fleetscope.times import format_time

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from collector.auth import Authenticator

KINDS = ("webhook", "slack", "discord", "email")
# The alert_channels table's bounds on target.
MIN_TARGET_LEN = 3
MAX_TARGET_LEN = 2000

# DO UPDATE (a no-op) rather than DO NOTHING so that RETURNING yields the
# existing row's id too; xmax = 0 tells a new row from an existing one.
CREATE_SQL = """
INSERT INTO alert_channels AS c (operator_id, kind, target) VALUES (%s, %s, %s)
ON CONFLICT (operator_id, kind, target) DO UPDATE SET kind = c.kind
RETURNING channel_id, (xmax = 0) AS inserted
"""
# Scoped by operator: another operator's channel is "not found", exactly as a
# channel that does not exist, so ids reveal nothing.
DELETE_SQL = "DELETE FROM alert_channels WHERE channel_id = %s AND operator_id = %s"
LIST_SQL = ("SELECT channel_id, kind, target, created_at FROM alert_channels"
            " WHERE operator_id = %s ORDER BY channel_id")


class AlertChannels:
    """Creates, lists and deletes an operator's alert channels."""

    def __init__(self, *, pool: AsyncConnectionPool, auth: Authenticator, max_json_bytes: int,
                 addresses: AddressPolicy | None = None) -> None:
        self._pool = pool
        self._addresses = addresses or AddressPolicy()
        self._auth = auth
        self._max_json_bytes = max_json_bytes

    async def post(self, request: web.Request) -> web.Response:
        operator_id = await self._auth.operator(request)
        body = await read_json_object(request, max_bytes=self._max_json_bytes)
        kind = body.get("kind")
        if kind not in KINDS:
            raise bad_field("kind", f"must be one of {', '.join(KINDS)}")
        target = str_field(body, "target", min_len=MIN_TARGET_LEN, max_len=MAX_TARGET_LEN)
        target = email_address("target", target) if kind == "email" else http_url("target", target)
        refused = None if kind == "email" else self._addresses.url_refusal(target)
        if refused is not None:  # issue 15: no SSRF (checked again when delivering)
            raise Rejected(400, R_REFUSED_TARGET, f"target: {refused}; alerts go to public addresses only")
        async with self._pool.connection() as conn:
            channel_id, inserted = await (await conn.execute(CREATE_SQL, (operator_id, kind, target))).fetchone()
        return web.json_response({"channel_id": channel_id, "kind": kind, "target": target},
                                 status=201 if inserted else 200)

    async def get(self, request: web.Request) -> web.Response:
        operator_id = await self._auth.operator(request)
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(LIST_SQL, (operator_id,))).fetchall()
        return web.json_response({"channels": [
            {"channel_id": r[0], "kind": r[1], "target": r[2], "created_at": format_time(r[3])} for r in rows
        ]})

    async def delete(self, request: web.Request) -> web.Response:
        operator_id = await self._auth.operator(request)
        raw = request.match_info["channel_id"]
        channel_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None
        deleted = 0
        if channel_id is not None:
            async with self._pool.connection() as conn:
                deleted = (await conn.execute(DELETE_SQL, (channel_id, operator_id))).rowcount
        if not deleted:
            raise Rejected(404, R_NOT_FOUND, f"no channel {raw[:40]!r} among this operator's channels")
        return web.Response(status=204)
