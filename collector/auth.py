"""Who is calling: operator, node and admin tokens from ``Authorization: Bearer``.

Tokens are found by their SHA-256 through the unique index, then compared in
constant time (fleetscope/tokens.py); the admin token, which lives in the
environment and not the database, is compared with ``hmac.compare_digest``.
A node's id always comes from its token, never from a request body, so a
token can only ever act as the one node or operator it was issued to.

Successful lookups are cached for ``token_cache_s`` (a minute by default),
keyed by the token's hash rather than the token, so that a push costs a dict
lookup and the cache holds nothing that could be replayed. Misses are not
cached: a token only becomes valid by being issued, and caching random junk
would let a caller fill the cache.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from collector.lru import LruDict
from collector.ratelimit import FailureLimiter
from collector.requests import (
    MAX_TOKEN_LEN,
    R_BAD_TOKEN,
    R_MISSING_TOKEN,
    R_NO_ADMIN_TOKEN,
    Rejected,
    within_deadline,
)
from fleetscope import tokens
from fleetscope.registry import NODE_BY_TOKEN_SQL, OPERATOR_BY_TOKEN_SQL

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp import web
    from psycopg_pool import AsyncConnectionPool

# Cached identities; beyond this the least recently used are looked up again.
TOKEN_CACHE_ENTRIES = 100_000
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="fleetscope"'}



@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """The node a token belongs to, with what a push needs to know about it."""

    node_id: int
    interval_s: int


def bearer_token(request: web.Request) -> str:
    """The request's bearer token; 401 when there is none or it cannot be one of ours."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Rejected(401, R_MISSING_TOKEN, "send the token as 'Authorization: Bearer <token>'",
                       headers=_CHALLENGE)
    if len(token) > MAX_TOKEN_LEN or not token.isascii() or not token.isprintable():
        raise _bad_token()
    return token


def _bad_token() -> Rejected:
    return Rejected(401, R_BAD_TOKEN, "the token is not valid", headers=_CHALLENGE)


class Authenticator:
    """Resolves bearer tokens to nodes, operators or the admin role."""

    def __init__(self, pool: AsyncConnectionPool, *, admin_token: str | None, cache_s: float,
                 clock: Callable[[], float] = time.monotonic, deadline_s: float | None = None) -> None:
        self._pool = pool
        # A lookup not answered within this is a 503 (issue 15: no hung requests).
        self._deadline_s = deadline_s
        self._admin = admin_token.encode() if admin_token else None
        self._cache_s = cache_s
        self._clock = clock
        self._nodes: LruDict = LruDict(TOKEN_CACHE_ENTRIES)
        self._operators: LruDict = LruDict(TOKEN_CACHE_ENTRIES)
        # Failed authentications by source address (issue 15: floods of bad tokens).
        self.failures = FailureLimiter()

    async def node(self, request: web.Request) -> NodeIdentity:
        """The node whose token the request carries; 401 otherwise (429 for a source that fails too often)."""
        return await self._counting_failures(request, self._node)

    async def operator(self, request: web.Request) -> int:
        """The operator_id whose token the request carries; 401 otherwise (429 for a source that fails too often)."""
        return await self._counting_failures(request, self._operator)

    async def _counting_failures(self, request: web.Request, resolve):  # type: ignore[no-untyped-def]
        source = request.remote or "unknown"
        try:
            return await resolve(request, source)
        except Rejected as rejected:
            if rejected.status == 401:
                self.failures.fail(source)
            raise

    async def _node(self, request: web.Request, source: str) -> NodeIdentity:
        token = bearer_token(request)
        if token.startswith(tokens.PREFIXES["operator"]):
            raise _bad_token()  # an operator token is never a node's: no query needed
        digest = tokens.token_hash(token)
        cached = self._cached(self._nodes, digest)
        if cached is not None:
            return cached
        self.failures.check(source)  # before any lookup: a flood costs no queries
        row = await self._lookup(NODE_BY_TOKEN_SQL, digest)
        if row is None or not tokens.matches(token, bytes(row[1])):
            raise _bad_token()
        identity = NodeIdentity(node_id=row[0], interval_s=row[2])
        self._remember(self._nodes, digest, identity)
        return identity

    async def _operator(self, request: web.Request, source: str) -> int:
        token = bearer_token(request)
        if token.startswith(tokens.PREFIXES["node"]):
            raise _bad_token()
        digest = tokens.token_hash(token)
        cached = self._cached(self._operators, digest)
        if cached is not None:
            return cached
        self.failures.check(source)
        row = await self._lookup(OPERATOR_BY_TOKEN_SQL, digest)
        if row is None or not tokens.matches(token, bytes(row[1])):
            raise _bad_token()
        self._remember(self._operators, digest, row[0])
        return row[0]

    def admin(self, request: web.Request) -> None:
        """Returns if the request carries the admin token; 503 when none is configured, else 401."""
        if self._admin is None:
            raise Rejected(503, R_NO_ADMIN_TOKEN,
                           "no admin token configured: set FLEETSCOPE_ADMIN_TOKEN on the collector")
        token = bearer_token(request)
        if not hmac.compare_digest(token.encode(), self._admin):
            raise _bad_token()

    async def _lookup(self, sql: str, digest: bytes) -> tuple | None:
        async def query() -> tuple | None:
            async with self._pool.connection() as conn:
                return await (await conn.execute(sql, (digest,))).fetchone()

        if self._deadline_s is None:
            return await query()
        return await within_deadline(query(), self._deadline_s)

    def _cached(self, cache: LruDict, digest: bytes):  # type: ignore[no-untyped-def]
        entry = cache.get(digest)
        if entry is None:
            return None
        value, expires = entry
        if self._clock() >= expires:
            cache.pop(digest, None)
            return None
        return value

    def _remember(self, cache: LruDict, digest: bytes, value: object) -> None:
        if self._cache_s > 0:
            cache.put(digest, (value, self._clock() + self._cache_s))
