"""Operators' alert channels: ``POST``, ``GET /api/v1/channels``, ``DELETE /api/v1/channels/{id}`` and
``POST /api/v1/channels/{id}/test`` (operator token).

A channel belongs to the operator whose token created it, and the list shows
the caller's channels only: the operator id comes from the token, never from
the request, so no token can read, add or delete another operator's channels (a delete of
another operator's channel is a 404, as for one that does not exist).
Creating a channel that already exists returns it (200) instead of a second
row, so a retried request is harmless. Targets are checked here (webhook,
Slack and Discord: an http(s) URL with a host; email: a plausible address);
delivering to them is the alert loop's job. A test sends one message (event
"test") to one of the caller's channels at once, through the deliverer's
sender (collector/delivery.py: the same formats and the same SSRF guard), and
answers with the outcome; at most one test per channel every TEST_GAP_S.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from aiohttp import web

from collector import messages
from collector.addresses import R_REFUSED_TARGET, AddressPolicy
from collector.lru import LruDict
from collector.requests import (
    R_NOT_FOUND,
    R_TOO_OFTEN,
    Rejected,
    bad_field,
    email_address,
    http_url,
    read_json_object,
    str_field,
)
from fleetscope.times import format_time

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from collector.auth import Authenticator
    from collector.delivery import Sender

# A test message per channel at most this often: enough to try again after
# fixing a receiver, too rare to make the collector anyone's message cannon.
TEST_GAP_S = 5.0
TEST_GAP_ENTRIES = 10_000

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
CHANNEL_SQL = "SELECT kind, target FROM alert_channels WHERE channel_id = %s AND operator_id = %s"
LIST_SQL = ("SELECT channel_id, kind, target, created_at FROM alert_channels"
            " WHERE operator_id = %s ORDER BY channel_id")


class AlertChannels:
    """Creates, lists and deletes an operator's alert channels."""

    def __init__(self, *, pool: AsyncConnectionPool, auth: Authenticator, max_json_bytes: int,
                 addresses: AddressPolicy | None = None, sender: Sender | None = None) -> None:
        self._pool = pool
        self._addresses = addresses or AddressPolicy()
        self._auth = auth
        self._max_json_bytes = max_json_bytes
        self._sender = sender
        self._tested: LruDict = LruDict(TEST_GAP_ENTRIES)  # channel_id -> monotonic time of its last test

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

    async def test(self, request: web.Request) -> web.Response:
        """Send a test message to one of the caller's channels now: 200 ``{"channel_id", "ok", "error"}``."""
        operator_id = await self._auth.operator(request)
        raw = request.match_info["channel_id"]
        channel_id = _channel_id(raw)
        row = None
        if channel_id is not None:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(CHANNEL_SQL, (channel_id, operator_id))).fetchone()
        if row is None:
            raise Rejected(404, R_NOT_FOUND, f"no channel {raw[:40]!r} among this operator's channels")
        if self._sender is None:
            raise Rejected(503, "no_sender", "this collector sends no alerts")
        now = time.monotonic()
        last = self._tested.get(channel_id)
        if last is not None and now - last < TEST_GAP_S:
            raise Rejected(429, R_TOO_OFTEN, f"channel {channel_id} was tested {now - last:.0f} s ago; "
                           f"one test every {TEST_GAP_S:g} s", headers={"Retry-After": str(round(TEST_GAP_S))})
        self._tested.put(channel_id, now)
        kind, target = row
        payload = messages.test_payload(operator_id=operator_id, channel_id=channel_id,
                                        at=format_time(datetime.now(timezone.utc)))
        error = await self._sender.attempt(kind, target, payload)
        return web.json_response({"channel_id": channel_id, "kind": kind, "target": target, "ok": error is None,
                                  "error": None if error is None else str(error)})

    async def delete(self, request: web.Request) -> web.Response:
        operator_id = await self._auth.operator(request)
        raw = request.match_info["channel_id"]
        channel_id = _channel_id(raw)
        deleted = 0
        if channel_id is not None:
            async with self._pool.connection() as conn:
                deleted = (await conn.execute(DELETE_SQL, (channel_id, operator_id))).rowcount
        if not deleted:
            raise Rejected(404, R_NOT_FOUND, f"no channel {raw[:40]!r} among this operator's channels")
        return web.Response(status=204)


def _channel_id(raw: str) -> int | None:
    """The id in a path, or None when it cannot be one."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None
