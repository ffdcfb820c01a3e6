"""Node registration: ``POST /api/v1/nodes`` with an operator token; pausing: ``PATCH /api/v1/nodes/{node_id}``.

The node is created for the operator whose token signed the request; its
token is returned once and only its SHA-256 is stored (fleetscope/tokens.py).
The checks are those of ``fleetscope.registry.register_node`` and the
``nodes`` table's constraints, made here first so that a bad field is a 400
that names it rather than a database error; the INSERT is the same
statement, run on the collector's async pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from aiohttp import web

from collector.addresses import R_REFUSED_TARGET, AddressPolicy
from collector.requests import (
    R_CONFLICT,
    R_NOT_FOUND,
    Rejected,
    bad_field,
    http_url,
    int_field,
    read_json_object,
    str_field,
)
from fleetscope import states, tokens
from fleetscope.registry import REGISTER_NODE_SQL, SET_PAUSED_SQL

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from collector.auth import Authenticator

# The nodes table's limits (fleetscope/migrations/0001_core.sql).
MAX_NAME_LEN = 200
MIN_INTERVAL_S = 5
MAX_INTERVAL_S = 3600
MAX_GRACE_S = 86400
MAX_URL_LEN = 2000



def check_interval(interval_s: int) -> None:
    """The interval divides an hour so no uptime slot straddles an hourly rollup (fleetscope/uptime.py)."""
    if MAX_INTERVAL_S % interval_s != 0:
        raise bad_field("interval_s", f"must divide 3600 (e.g. 5, 10, 15, 30, 60), got {interval_s}")


class Registration:
    """Creates nodes for operators."""

    def __init__(self, *, pool: AsyncConnectionPool, auth: Authenticator, max_json_bytes: int,
                 addresses: AddressPolicy | None = None) -> None:
        self._pool = pool
        self._addresses = addresses or AddressPolicy()
        self._auth = auth
        self._max_json_bytes = max_json_bytes

    async def post(self, request: web.Request) -> web.Response:
        operator_id = await self._auth.operator(request)
        body = await read_json_object(request, max_bytes=self._max_json_bytes)
        name = str_field(body, "name", max_len=MAX_NAME_LEN)
        scrape_url = str_field(body, "scrape_url", max_len=MAX_URL_LEN, min_len=8, required=False)
        if scrape_url is not None:
            scrape_url = http_url("scrape_url", scrape_url)
            refused = self._addresses.url_refusal(scrape_url)
            if refused is not None:  # issue 15: no SSRF (checked again at every connection)
                raise Rejected(400, R_REFUSED_TARGET, f"scrape_url: {refused}; the collector scrapes public "
                               "addresses only")
        interval_s = int_field(body, "interval_s", lo=MIN_INTERVAL_S, hi=MAX_INTERVAL_S,
                               default=states.DEFAULT_INTERVAL_S)
        check_interval(interval_s)
        grace_s = int_field(body, "grace_s", lo=interval_s, hi=MAX_GRACE_S, required=False)
        if grace_s is None:
            grace_s = min(states.default_grace_s(interval_s), MAX_GRACE_S)
        token = tokens.new_token("node")
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(REGISTER_NODE_SQL, (operator_id, name, scrape_url, interval_s, grace_s,
                                                                tokens.token_hash(token), None))
                node_id = (await cursor.fetchone())[0]
        except psycopg.errors.UniqueViolation:
            raise Rejected(409, R_CONFLICT, f"you already have a node named {name!r}") from None
        return web.json_response({"node_id": node_id, "node_token": token, "name": name,
                                  "interval_s": interval_s, "grace_s": grace_s}, status=201)

    async def patch(self, request: web.Request) -> web.Response:
        """``{"paused": true|false}``: pause or resume the caller's node (the meaning: registry.set_paused).

        Another operator's node is a 404, exactly as a node that does not exist.
        """
        operator_id = await self._auth.operator(request)
        raw = request.match_info["node_id"]
        node_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None
        body = await read_json_object(request, max_bytes=self._max_json_bytes)
        paused = body.get("paused")
        if not isinstance(paused, bool):
            raise bad_field("paused", "must be true or false")
        row = None
        if node_id is not None:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(SET_PAUSED_SQL, {"paused": paused, "node_id": node_id,
                                                                 "operator_id": operator_id})).fetchone()
        if row is None:
            raise Rejected(404, R_NOT_FOUND, f"no node {raw[:40]!r} among this operator's nodes")
        return web.json_response({"node_id": row[0], "name": row[1], "paused": row[2]})
