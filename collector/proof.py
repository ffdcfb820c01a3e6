"""Proof of GPU, the collector's side: the waiting room and the four endpoints (issue 14).

The protocol and its wire format are docs/proof.md; the definitions (work,
sizes, Merkle tree, judgement) are fleetscope/proof.py. Here:

- ``GET /api/v1/proof/challenge?wait=S``: a host's prover waits for work in a
  long-poll. The nodes waiting at a round's instant are the ones a round may
  choose (collector/proof_rounds.py); a chosen node's waiters are woken with
  its challenge at once, and an offer not yet started is handed again to a
  poll that comes back within START_TIMEOUT_S (a dropped connection).
- ``POST /api/v1/proof/start``: the seed. The round trip (start received -
  offered) is recorded, at most MAX_RTT_S of it forgiven.
- ``POST /api/v1/proof/commit``: the Merkle root over C's chunks. Seconds =
  (commit received - offered) - round trip; over ``budget_s`` is late: 409,
  recorded failed. Otherwise the entries (rows[m], columns[m]) the host must
  open, chosen only now (the root already binds every entry).
- ``POST /api/v1/proof/open``: the chunks holding those entries with their
  paths (``fleetscope.proof.opening`` records), judged by
  ``fleetscope.proof.judge`` in a worker thread; 200 passed or 422 failed,
  stored with the records exactly as received: everything an auditor needs.

Every time is the collector's clock when the request's body had arrived,
before any database wait, so a slow database never makes a host late (and
headers sent early buy no time). Every database
step has the ``db_timeout_s`` deadline; past it the middleware answers 503.
State lives in the database (any replica can take start, commit and open);
only the waiting room and the pending offers are this process's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import secrets
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import psycopg
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from collector import proof_rounds, proof_verdicts, requests
from collector.requests import Rejected, bad_field
from fleetscope import proof

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from datetime import datetime

    from prometheus_client import CollectorRegistry
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from collector.auth import Authenticator
    from collector.settings import CollectorSettings

# Long-poll: the host's wait, in seconds (docs/proof.md).
DEFAULT_WAIT_S = 25.0
MAX_WAIT_S = 30.0
# Long-polls one node may hold in the waiting room (a prover needs one; a few for reconnects): a further
# poll releases the node's oldest with 204, so one token cannot pile up waiters and their connections.
MAX_WAITERS_PER_NODE = 4
# An open body: at most CHECKED_ENTRIES opening records, each a
# chunk in base64 (1,368 characters) and a path of at most
# bit_length(leaf_count(n)) + 1 hashes of 64 hex digits (27 for an H100's C:
# about 3.2 KiB a record), plus JSON's keys and spacing. The records are
# stored and published whole (proof_challenges.openings), so every opened
# chunk can be hashed into its leaf by an auditor: 8 x ~3 KiB a GPU at most.
RECORD_SLACK_BYTES = 256
BODY_SLACK_BYTES = 4096
MAX_PATH_LEN = 64
VERIFY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Refusal reasons (the `reason` label of fleetscope_collector_rejects_total).
R_LATE = "late"
R_DUPLICATE = "duplicate"
R_STARTED = "started"
R_EXPIRED = "expired"
R_DECIDED = "decided"
R_NOT_STARTED = "not_started"
R_NOT_COMMITTED = "not_committed"

CHALLENGE_SQL = """
SELECT c.offered_at, c.started_at, c.rtt_s, c.committed_at, c.root, c.rows, c.columns, c.verdict, c.reason,
       c.n, c.k, c.reference_tflops, c.budget_s, r.seed
  FROM proof_challenges c JOIN proof_rounds r USING (round_id)
 WHERE c.round_id = %(round_id)s AND c.node_id = %(node_id)s AND c.gpu_uuid = %(gpu_uuid)s
"""
NODE_CHALLENGES_SQL = """
SELECT c.gpu_uuid, c.offered_at, c.started_at, c.verdict, c.budget_s, r.seed
  FROM proof_challenges c JOIN proof_rounds r USING (round_id)
 WHERE c.round_id = %(round_id)s AND c.node_id = %(node_id)s
   FOR UPDATE OF c
"""
START_SQL = """
UPDATE proof_challenges SET started_at = %(at)s, rtt_s = %(rtt_s)s
 WHERE round_id = %(round_id)s AND node_id = %(node_id)s AND verdict IS NULL AND started_at IS NULL
"""
COMMIT_SQL = """
UPDATE proof_challenges SET root = %(root)s, committed_at = %(at)s, rows = %(rows)s::integer[],
       columns = %(columns)s::integer[]
 WHERE round_id = %(round_id)s AND node_id = %(node_id)s AND gpu_uuid = %(gpu_uuid)s AND verdict IS NULL
"""


def open_body_limit(n: int) -> int:
    """The largest open body accepted for an n x n C (docs/collector.md)."""
    record = (4 * math.ceil(proof.CHUNK_BYTES / 3) + (proof.leaf_count(n).bit_length() + 1) * (64 + 4)
              + RECORD_SLACK_BYTES)
    return proof.CHECKED_ENTRIES * record + BODY_SLACK_BYTES


class Proofs:
    """The proof endpoints, the waiting room, and opening rounds; one per app (collector/app.py)."""

    def __init__(self, *, pool: AsyncConnectionPool, auth: Authenticator, settings: CollectorSettings,
                 registry: CollectorRegistry, clock: Callable[[], datetime] = proof_rounds.utcnow) -> None:
        self._pool = pool
        self._auth = auth
        self._settings = settings
        self.clock = clock
        self._rng = secrets.SystemRandom()
        self._waiting: dict[int, list[asyncio.Future]] = {}
        self._offers: dict[int, tuple[dict[str, Any], float]] = {}  # node -> (challenge, monotonic expiry)
        self._closed = False
        self.rounds = Counter("fleetscope_proof_rounds", "Proof-of-GPU rounds opened by this collector.",
                              registry=registry)
        self.verdicts = Counter("fleetscope_proof_verdicts", "Proof-of-GPU verdicts recorded, per GPU.",
                                ["verdict"], registry=registry)
        self.verify_seconds = Histogram("fleetscope_proof_verify_seconds",
                                        "Time to judge one GPU's openings (fleetscope.proof.judge).",
                                        buckets=VERIFY_BUCKETS, registry=registry)
        self.waiting_gauge = Gauge("fleetscope_proof_waiting_nodes",
                                   "Nodes whose prover is waiting for a challenge on this collector.",
                                   registry=registry)

    # -- the waiting room and rounds ------------------------------------------------

    @property
    def waiting_nodes(self) -> list[int]:
        return sorted(self._waiting)

    async def open_round(self) -> int | None:
        """Open a round now among the waiting nodes; its id, or None when nobody was eligible."""
        waiting = self.waiting_nodes
        if not waiting:
            return None
        settings = self._settings
        async with self._db() as conn:
            challenges = await proof_rounds.plan(conn, waiting, at=self.clock(), share=settings.proof_share,
                                                 scale=settings.proof_scale, rng=self._rng)
            if not challenges:
                return None
            at = self.clock()  # the round's instant: every offer is timed from it
            round_id = await proof_rounds.insert_round(conn, challenges, at=at, seed=proof.new_seed(),
                                                       share=settings.proof_share, scale=settings.proof_scale,
                                                       collector_id=settings.collector_id)
        self.rounds.inc()
        gpus: dict[int, list[dict[str, object]]] = defaultdict(list)
        for c in challenges:
            gpus[c.node_id].append(c.offer())
        expires = time.monotonic() + proof.START_TIMEOUT_S
        for node_id, entries in gpus.items():
            offer = {"protocol": proof.PROTOCOL_VERSION, "round_id": round_id, "node_id": node_id, "gpus": entries}
            self._offers[node_id] = (offer, expires)
            for waiter in self._waiting.get(node_id, ()):
                if not waiter.done():
                    waiter.set_result(offer)
        return round_id

    async def expire(self, *, now: datetime | None = None) -> int:
        """Run the verdict timers as of ``now`` (default: the clock); returns how many were decided."""
        self._forget_stale_offers()
        async with self._db() as conn:
            decided = await proof_verdicts.expire(conn, at=now or self.clock())
        for row in decided:
            self.verdicts.labels(row[3]).inc()
        return len(decided)

    async def close_after_restart(self) -> int:
        """Close what an earlier process of this collector left undecided (as no answer)."""
        async with self._db() as conn:
            closed = await proof_verdicts.close_after_restart(conn, collector_id=self._settings.collector_id,
                                                              at=self.clock())
        for row in closed:
            self.verdicts.labels(row[3]).inc()
        return len(closed)

    def close(self) -> None:
        """Answer every waiting long-poll (204) now: the app is shutting down."""
        self._closed = True
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _forget_stale_offers(self) -> None:
        now = time.monotonic()
        for node_id in [n for n, (_, expires) in self._offers.items() if expires <= now]:
            del self._offers[node_id]

    def _pending_offer(self, node_id: int) -> dict[str, Any] | None:
        entry = self._offers.get(node_id)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    @contextlib.asynccontextmanager
    async def _db(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; everything done with it within ``db_timeout_s``, else OperationalError (503)."""
        timeout = self._settings.db_timeout_s
        try:
            async with asyncio.timeout(timeout):
                async with self._pool.connection(timeout=timeout) as conn:
                    yield conn
        except TimeoutError:
            raise psycopg.OperationalError(f"the database did not answer within {timeout:g} s") from None

    # -- the endpoints --------------------------------------------------------------------

    async def challenge(self, request: web.Request) -> web.Response:
        """GET /api/v1/proof/challenge?wait=S: 200 with a challenge, or 204 when none came within S seconds."""
        node_id = (await self._auth.node(request)).node_id
        wait = _wait_s(request)
        offer = self._pending_offer(node_id)
        if offer is not None:
            return web.json_response(offer)
        if self._closed or wait == 0:
            return web.Response(status=204)
        waiter: asyncio.Future = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(node_id, [])
        waiters.append(waiter)
        while len(waiters) > MAX_WAITERS_PER_NODE:
            oldest = waiters.pop(0)
            if not oldest.done():
                oldest.set_result(None)
        self.waiting_gauge.set(len(self._waiting))
        try:
            async with asyncio.timeout(wait):
                offer = await waiter
        except TimeoutError:
            offer = None
        finally:
            waiters = self._waiting.get(node_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(node_id, None)
            self.waiting_gauge.set(len(self._waiting))
        return web.json_response(offer) if offer is not None else web.Response(status=204)

    async def start(self, request: web.Request) -> web.Response:
        """POST /api/v1/proof/start {"round_id"}: the seed and the deadline; the round trip is measured here."""
        received = self.clock()
        node_id = (await self._auth.node(request)).node_id
        body = await requests.read_json_object(request, max_bytes=self._settings.max_json_bytes)
        round_id = requests.int_field(body, "round_id", lo=1, hi=2**63 - 1)
        params = {"round_id": round_id, "node_id": node_id}
        expired = 0
        async with self._db() as conn, conn.transaction():
            rows = await (await conn.execute(NODE_CHALLENGES_SQL, params)).fetchall()
            if not rows:
                raise Rejected(404, requests.R_NOT_FOUND, f"round {round_id} offered this node no work")
            if any(started is not None for _, _, started, _, _, _ in rows):
                raise Rejected(409, R_STARTED, f"round {round_id} was already started by this node")
            if all(verdict is not None for _, _, _, verdict, _, _ in rows):
                raise Rejected(409, R_EXPIRED, f"round {round_id}'s offer was closed: {proof_verdicts.NO_START}")
            elapsed = max(0.0, (received - rows[0][1]).total_seconds())
            if elapsed > proof.START_TIMEOUT_S:
                verdict = proof.Verdict("no_answer", proof_verdicts.NO_START)
                for gpu_uuid, *_ in rows:
                    expired += await proof_verdicts.decide(conn, round_id=round_id, node_id=node_id,
                                                           gpu_uuid=gpu_uuid, verdict=verdict, at=received)
            else:
                rtt = min(elapsed, proof.MAX_RTT_S)
                await conn.execute(START_SQL, {**params, "at": received, "rtt_s": rtt})
        self._offers.pop(node_id, None)
        if elapsed > proof.START_TIMEOUT_S:
            self.verdicts.labels("no_answer").inc(expired)
            raise Rejected(409, R_EXPIRED, f"round {round_id}'s offer was not started within "
                                           f"{proof.START_TIMEOUT_S:g} s and is closed as no answer")
        deadlines = {gpu_uuid: round(budget_s + rtt, 6) for gpu_uuid, _, _, _, budget_s, _ in rows}
        return web.json_response({"round_id": round_id, "seed": rows[0][5], "deadline_s": min(deadlines.values()),
                                  "deadlines": deadlines})

    async def commit(self, request: web.Request) -> web.Response:
        """POST /api/v1/proof/commit {"round_id", "gpu_uuid", "root"}: the entries to open, or 409 late."""
        node_id = (await self._auth.node(request)).node_id
        body = await requests.read_json_object(request, max_bytes=self._settings.max_json_bytes)
        # The root arrived with the body's last byte: a clock read when the headers came would let a host send
        # them at once and its root up to the timers' grace after the deadline, with made-up seconds.
        received = self.clock()
        params = _challenge_key(body, node_id)
        root = _hex_field(body.get("root"), "root")
        late: proof.Verdict | None = None
        async with self._db() as conn, conn.transaction():
            row = await (await conn.execute(CHALLENGE_SQL + " FOR UPDATE OF c", params)).fetchone()
            if row is None:
                raise _no_challenge(params)
            offered, started, rtt_s, _, stored_root, _, _, verdict, reason, n, k, ref, budget_s, _ = row
            if stored_root is not None:
                raise Rejected(409, R_DUPLICATE, "this GPU's root was already committed")
            if verdict is not None:
                if (reason or "").startswith("late"):
                    raise Rejected(409, R_LATE, reason)
                raise Rejected(409, R_DECIDED, f"this challenge was already decided: {verdict}")
            if started is None:
                raise Rejected(409, R_NOT_STARTED, "ask for the seed (POST /api/v1/proof/start) first")
            seconds = max(0.0, proof.seconds_of(offered_at=offered, committed_at=received, rtt_s=rtt_s))
            size = proof.Size(n=n, k=k, reference_tflops=ref, budget_s=budget_s)
            if seconds > budget_s:
                late = proof.late(size, seconds=seconds, deadline=budget_s)
                await proof_verdicts.decide(conn, **params, verdict=late, at=received, root=root.hex(),
                                            committed_at=received)
            else:
                rows, columns = proof.choose_entries(n, self._rng)
                await conn.execute(COMMIT_SQL, {**params, "root": root.hex(), "at": received, "rows": rows,
                                                "columns": columns})
        if late is not None:
            self.verdicts.labels("failed").inc()
            raise Rejected(409, R_LATE, late.reason)
        return web.json_response({"rows": rows, "columns": columns})

    async def open(self, request: web.Request) -> web.Response:
        """POST /api/v1/proof/open: the chunks of the named entries with their paths; 200 passed, 422 failed."""
        node_id = (await self._auth.node(request)).node_id
        raw = await requests.read_body(request, max_bytes=self._settings.max_body_bytes)
        received = self.clock()  # the openings arrived with the body's last byte (see commit)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise Rejected(400, requests.R_INVALID_JSON, f"the body is not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(body, dict):
            raise Rejected(400, requests.R_INVALID_JSON, "the body must be a JSON object")
        params = _challenge_key(body, node_id)
        async with self._db() as conn:
            row = await (await conn.execute(CHALLENGE_SQL, params)).fetchone()
        if row is None:
            raise _no_challenge(params)
        offered, _, rtt_s, committed, root, named, columns, verdict, _, n, k, ref, budget_s, seed = row
        if len(raw) > open_body_limit(n):
            raise Rejected(413, requests.R_BODY_TOO_LARGE,
                           f"an open body for a {n} x {n} C is at most {open_body_limit(n)} bytes")
        if verdict is not None:
            raise Rejected(409, R_DECIDED, f"this challenge was already decided: {verdict}")
        if root is None:
            raise Rejected(409, R_NOT_COMMITTED, "commit a root (POST /api/v1/proof/commit) first")
        if (received - committed).total_seconds() > proof.OPEN_TIMEOUT_S:
            failed = proof.Verdict("failed", proof_verdicts.NOT_OPENED)
            await self._decide(params, failed, at=received)
            raise Rejected(409, R_LATE, f"entries not opened within {proof.OPEN_TIMEOUT_S:g} s of the commitment")
        openings = _openings(body.get("openings"), proof.checked_leaves(n, named, columns), n)
        size = proof.Size(n=n, k=k, reference_tflops=ref, budget_s=budget_s)
        seconds = max(0.0, proof.seconds_of(offered_at=offered, committed_at=committed, rtt_s=rtt_s))
        key = proof.keys(seed, node_id, params["gpu_uuid"])
        outcome = await asyncio.to_thread(self._judge, key, size, bytes.fromhex(root), named, columns, openings,
                                          seconds)
        if not await self._decide(params, outcome, at=self.clock(), openings=openings):
            raise Rejected(409, R_DECIDED, "this challenge was decided while its openings were being checked")
        if outcome.verdict == "passed":
            return web.json_response(outcome.as_dict())
        return web.json_response({**outcome.as_dict(), "error": "the proof failed"}, status=422)

    def _judge(self, key: tuple[int, int, int, int], size: proof.Size, root: bytes, rows: list[int],
               columns: list[int], openings: list[dict[str, Any]], seconds: float) -> proof.Verdict:
        started = time.perf_counter()
        try:
            return proof.judge(key, size, root=root, rows=rows, cols=columns, openings=openings, seconds=seconds,
                               deadline=size.budget_s)
        finally:
            self.verify_seconds.observe(time.perf_counter() - started)

    async def _decide(self, params: dict[str, Any], verdict: proof.Verdict, *, at: datetime,
                      **fields: Any) -> bool:
        async with self._db() as conn, conn.transaction():
            done = await proof_verdicts.decide(conn, **params, verdict=verdict, at=at, **fields)
        if done:
            self.verdicts.labels(verdict.verdict).inc()
        return done


# -- request parts -------------------------------------------------------------------------

def _wait_s(request: web.Request) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return DEFAULT_WAIT_S
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not 0 <= wait <= MAX_WAIT_S:
        raise bad_field("wait", f"must be seconds from 0 to {MAX_WAIT_S:g}, got {raw[:40]!r}")
    return wait


def _challenge_key(body: dict[str, Any], node_id: int) -> dict[str, Any]:
    round_id = requests.int_field(body, "round_id", lo=1, hi=2**63 - 1)
    gpu_uuid = requests.str_field(body, "gpu_uuid", max_len=128)
    return {"round_id": round_id, "node_id": node_id, "gpu_uuid": gpu_uuid}


def _no_challenge(params: dict[str, Any]) -> Rejected:
    return Rejected(404, requests.R_NOT_FOUND,
                    f"round {params['round_id']} did not challenge GPU {params['gpu_uuid'][:128]} of this node")


def _hex_field(value: Any, name: str) -> bytes:
    """A SHA-256 digest sent as 64 hex digits; 400 naming ``name`` otherwise."""
    if not isinstance(value, str) or len(value) != 64:
        raise bad_field(name, "must be a SHA-256 digest as 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise bad_field(name, "must be a SHA-256 digest as 64 hex digits") from None


def _openings(value: Any, asked: list[int], n: int) -> list[dict[str, Any]]:
    """The open body's opening records, as stored; 400 for anything malformed or not asked for.

    ``asked``: the leaves holding the named entries (``proof.checked_leaves``).
    Each record is kept exactly as received (``leaf``, ``chunk``, ``path``),
    its other keys dropped; whether it matches the commitment is the judge's.
    """
    if not isinstance(value, list) or not 1 <= len(value) <= len(asked):
        raise bad_field("openings", f"must be a list of the {len(asked)} leaves holding the named entries")
    count = proof.leaf_count(n)
    chunk_chars = 4 * math.ceil(proof.CHUNK_BYTES / 3)
    records: list[dict[str, Any]] = []
    seen: set[int] = set()
    for at, entry in enumerate(value):
        name = f"openings[{at}]"
        if not isinstance(entry, dict):
            raise bad_field(name, "must be an object {leaf, chunk, path}")
        leaf = entry.get("leaf")
        if isinstance(leaf, bool) or not isinstance(leaf, int) or not 0 <= leaf < count:
            raise bad_field(f"{name}.leaf", f"must be a leaf index of C's {count} chunks")
        if leaf not in asked:
            raise bad_field(f"{name}.leaf", f"leaf {leaf} holds no named entry; the leaves asked for: {asked}")
        if leaf in seen:
            raise bad_field(f"{name}.leaf", f"leaf {leaf} is sent twice")
        seen.add(leaf)
        chunk = entry.get("chunk")
        if not isinstance(chunk, str) or len(chunk) > chunk_chars:
            raise bad_field(f"{name}.chunk", f"must be base64 of the chunk's {proof.CHUNK_ENTRIES} little-endian "
                                             "float32 values")
        try:
            base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError):
            raise bad_field(f"{name}.chunk", "is not valid base64") from None
        path = entry.get("path")
        if not isinstance(path, list) or len(path) > MAX_PATH_LEN:
            raise bad_field(f"{name}.path", f"must be a list of at most {MAX_PATH_LEN} hashes")
        for j, h in enumerate(path):
            _hex_field(h, f"{name}.path[{j}]")
        records.append({"leaf": leaf, "chunk": chunk, "path": path})
    return records
