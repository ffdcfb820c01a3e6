"""Offline alerts: deciding, per node, when an operator is told (issue 7).

Each node's next deadline is stored and indexed, as healthchecks stores
``alert_after``: ``nodes.alert_after`` = last successful observation + grace,
the first moment the node is down by the definition in fleetscope/states.py
(online at t: an ok observation in (t - grace, t]). One round of evaluation:

1. Reads the ok observations received since the previous round (less an
   overlap for rows the writer commits late) and moves ``nodes.last_ok_at``
   and ``alert_after`` forward. The writer does not keep these columns; the
   alert loop is their only writer.
2. Nodes with a new ok observation whose alert state is ``down`` and whose
   ``node_status`` is now up or late are back: ``node_up``.
3. Nodes whose ``alert_after`` has passed (one indexed range read) are down:
   ``node_down``, and their deadline is cleared until they return.
4. Nodes whose flap-damping mute has ended get one catch-up message if their
   state differs from the last one sent.

Never alerted: paused nodes (no deadline), nodes never seen (status new: no
last ok, so no deadline), and a node's first known state (a collector started
against a fleet with long-dead nodes sends nothing for them).

Flap damping: at most MAX_MESSAGES_PER_WINDOW messages per node per window
(``--alert-flap-window-s``, an hour by default). The window opens with the
first message after the previous one closed. Once its quota is spent, further
changes are recorded but not sent; when the window ends, if the node's state
differs from the last message sent, one message with the current state is
sent (``flapping: true``, with the number of changes not sent), and it opens
the next window. So any window holds at most MAX_MESSAGES_PER_WINDOW messages
per node per channel, and the last message always tells the current state.

Messages go to an outbox (one row per channel) in the same transaction as
the state change; collector/delivery.py sends them, apart from evaluation, so
a slow channel never delays the next round. A PostgreSQL advisory lock makes
a round exclusive, so several collector replicas may all run the loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg.types.json import Jsonb

from collector.background import BackgroundLoop
from fleetscope.states import DEFINITION_VERSION, LAST_OK_SQL, NodeStatus, node_status
from fleetscope.times import format_optional

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("fleetscope.alerts")

# Two down/up pairs an hour: enough to see that a node is unstable, few enough
# that a node flapping every minute does not bury the operator's inbox.
MAX_MESSAGES_PER_WINDOW = 4
# Observations are stamped at receive time but committed by the writer's
# batches a moment later (a spool replay later still); each round re-reads
# this much before its previous mark so a late commit is not missed.
# Re-reading is harmless: last_ok_at only moves forward.
SCAN_OVERLAP = timedelta(seconds=60)
# Done outbox rows are kept this long (alert_deliveries keeps the history).
OUTBOX_KEEP = timedelta(days=7)
# Any fixed number shared by all replicas: pg_try_advisory_xact_lock's key.
ADVISORY_LOCK_KEY = 0x666C_6565_7473_0007  # "fleets" + issue 7

EVENT_DOWN = "node_down"
EVENT_UP = "node_up"


@dataclass(frozen=True)
class Damping:
    """A node's flap-damping bookkeeping (alert_state's columns)."""

    window_started_at: datetime | None
    window_messages: int
    suppressed: int  # changes not sent since the last message (alert_state.flaps)


@dataclass(frozen=True)
class DampingDecision:
    send: bool
    window_started_at: datetime | None
    window_messages: int
    muted_until: datetime | None  # the window's end when its quota is spent


def damp(state: Damping, *, now: datetime, window: timedelta,
         limit: int = MAX_MESSAGES_PER_WINDOW) -> DampingDecision:
    """Whether a change at ``now`` is sent, and the bookkeeping after it (the rule in the module doc)."""
    if state.window_started_at is None or now >= state.window_started_at + window:
        return DampingDecision(True, now, 1, None)
    if state.window_messages < limit:
        count = state.window_messages + 1
        muted = state.window_started_at + window if count >= limit else None
        return DampingDecision(True, state.window_started_at, count, muted)
    return DampingDecision(False, state.window_started_at, state.window_messages,
                           state.window_started_at + window)


# -- statements -----------------------------------------------------------------

LOCK_SQL = "SELECT pg_try_advisory_xact_lock(%s)"
PROGRESS_SQL = "SELECT scanned_to FROM alert_progress"
SET_PROGRESS_SQL = "UPDATE alert_progress SET scanned_to = %s"

# The first round: every node's latest ok observation at %(at)s (the round's
# now), once, by states.LAST_OK_SQL (bounded index ranges per node, not a scan
# through a long-dead node's failures); later rounds read only new rows.
FIRST_SCAN_SQL = """
UPDATE nodes n
   SET last_ok_at = p.t,
       alert_after = CASE WHEN n.paused THEN NULL ELSE p.t + make_interval(secs => n.grace_s) END
  FROM (SELECT n2.node_id, {last_ok} AS t FROM nodes n2) p
 WHERE p.node_id = n.node_id AND p.t IS NOT NULL
RETURNING n.node_id
""".format(last_ok=LAST_OK_SQL.format(node_id="n2.node_id"))
SCAN_SQL = """
WITH fresh AS (
    SELECT node_id, max(time) AS t FROM observations
     WHERE ok AND time > %(since)s AND time <= %(now)s
     GROUP BY node_id
)
UPDATE nodes n
   SET last_ok_at = fresh.t,
       alert_after = CASE WHEN n.paused THEN NULL ELSE fresh.t + make_interval(secs => n.grace_s) END
  FROM fresh
 WHERE n.node_id = fresh.node_id AND (n.last_ok_at IS NULL OR fresh.t > n.last_ok_at)
RETURNING n.node_id
"""
NODE_COLUMNS = """n.node_id, n.operator_id, n.name, n.interval_s, n.grace_s, n.paused, n.last_ok_at,
       n.alert_after, s.status, s.since, s.window_started_at, s.window_messages, s.flaps, s.notified"""
# Of the nodes with a new ok observation, those whose alert state is not
# already up: in a healthy fleet that is none, so a round costs the scan and
# the deadline update only.
RETURNED_SQL = f"""
SELECT {NODE_COLUMNS}
  FROM nodes n LEFT JOIN alert_state s USING (node_id)
 WHERE n.node_id = ANY(%s) AND s.status IS DISTINCT FROM 'up' FOR UPDATE OF n
"""
# Deadlines passed: the indexed read healthchecks' alert_after is for.
DUE_SQL = f"""
SELECT {NODE_COLUMNS}
  FROM nodes n LEFT JOIN alert_state s USING (node_id)
 WHERE n.alert_after <= %s FOR UPDATE OF n
"""
UNMUTED_SQL = f"""
SELECT {NODE_COLUMNS}
  FROM alert_state s JOIN nodes n USING (node_id)
 WHERE s.muted_until <= %s FOR UPDATE OF s
"""
# A down node has no deadline until it returns (the nodes DUE_SQL just locked).
CLEAR_DEADLINES_SQL = "UPDATE nodes SET alert_after = NULL WHERE alert_after <= %s"
SAVE_STATE_SQL = """
INSERT INTO alert_state AS s (node_id, status, since, flaps, muted_until, window_started_at, window_messages, notified)
VALUES (%(node_id)s, %(status)s, %(since)s, %(flaps)s, %(muted_until)s, %(window_started_at)s,
        %(window_messages)s, %(notified)s)
ON CONFLICT (node_id) DO UPDATE SET status = EXCLUDED.status, since = EXCLUDED.since, flaps = EXCLUDED.flaps,
    muted_until = EXCLUDED.muted_until, window_started_at = EXCLUDED.window_started_at,
    window_messages = EXCLUDED.window_messages, notified = EXCLUDED.notified
"""
# The first ok observation after the node went down: when it came back.
RETURN_TIME_SQL = "SELECT min(time) FROM observations WHERE node_id = %s AND ok AND time > %s AND time <= %s"
ENQUEUE_SQL = """
INSERT INTO alert_outbox (channel_id, node_id, event, payload, created_at, next_attempt_at)
SELECT c.channel_id, %(node_id)s, %(event)s, %(payload)s, %(now)s, %(now)s
  FROM alert_channels c WHERE c.operator_id = %(operator_id)s
"""
PRUNE_OUTBOX_SQL = "DELETE FROM alert_outbox WHERE done_at < %s"


@dataclass
class RoundResult:
    """What one round did (for logs and tests)."""

    ran: bool = True            # False: another replica held the lock
    scanned_nodes: int = 0      # nodes with a new ok observation
    messages: list[tuple[int, str]] = field(default_factory=list)  # (node_id, event) queued
    suppressed: int = 0         # changes not sent because of flap damping
    queued: int = 0             # outbox rows (messages x channels)


def payload(row: dict[str, Any], *, event: str, since: datetime, flapping: bool, suppressed: int) -> dict[str, Any]:
    """The message every channel is built from; a generic webhook receives it as is (docs/alerts.md)."""
    down = event == EVENT_DOWN
    if down:
        reason = f"no successful observation in the last {row['grace_s']} s (its grace period)"
    else:
        reason = "a successful observation arrived again"
    return {
        "event": event,
        "node_id": row["node_id"],
        "name": row["name"],
        "since": format_optional(since),
        "status": "down" if down else "up",
        "last_ok_at": format_optional(row["last_ok_at"]),
        "interval_s": row["interval_s"],
        "grace_s": row["grace_s"],
        "operator_id": row["operator_id"],
        "flapping": flapping,
        "suppressed_changes": suppressed,
        "reason": reason,
        "definition_version": DEFINITION_VERSION,
    }


class Evaluator:
    """One round of alert evaluation at a time, on a connection from the pool."""

    def __init__(self, *, flap_window: timedelta, limit: int = MAX_MESSAGES_PER_WINDOW) -> None:
        self.flap_window = flap_window
        self.limit = limit
        self._pending: list[dict[str, Any]] = []  # alert_state rows to write (_flush)

    async def run_round(self, conn: AsyncConnection, *, now: datetime) -> RoundResult:
        """Evaluate every node at ``now`` in one transaction (module doc, steps 1 to 4)."""
        result = RoundResult()
        async with conn.transaction():
            locked = (await (await conn.execute(LOCK_SQL, (ADVISORY_LOCK_KEY,))).fetchone())[0]
            if not locked:
                return RoundResult(ran=False)
            scanned_to = (await (await conn.execute(PROGRESS_SQL)).fetchone())[0]
            if scanned_to is None:
                cur = await conn.execute(FIRST_SCAN_SQL, {"at": now})
            else:
                cur = await conn.execute(SCAN_SQL, {"since": min(scanned_to, now) - SCAN_OVERLAP, "now": now})
            fresh = [r[0] for r in await cur.fetchall()]
            result.scanned_nodes = len(fresh)
            await conn.execute(SET_PROGRESS_SQL, (max(now, scanned_to) if scanned_to else now,))

            # State rows are written in one batch per step (a fleet's first
            # round records thousands of first-known states); each step reads
            # alert_state after the previous step's batch.
            self._pending = []
            if fresh:
                for row in await self._rows(conn, RETURNED_SQL, (fresh,)):
                    await self._maybe_up(conn, row, now=now, result=result)
                await self._flush(conn)
            for row in await self._rows(conn, DUE_SQL, (now,)):
                await self._down(conn, row, now=now, result=result)
            await conn.execute(CLEAR_DEADLINES_SQL, (now,))
            await self._flush(conn)
            for row in await self._rows(conn, UNMUTED_SQL, (now,)):
                await self._unmuted(conn, row, now=now, result=result)
            await self._flush(conn)
            await conn.execute(PRUNE_OUTBOX_SQL, (now - OUTBOX_KEEP,))
        return result

    async def _rows(self, conn: AsyncConnection, sql: str, params: tuple) -> list[dict[str, Any]]:
        cur = await conn.execute(sql, params)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in await cur.fetchall()]

    def _status(self, row: dict[str, Any], now: datetime) -> NodeStatus:
        return node_status(last_ok=row["last_ok_at"], interval_s=row["interval_s"], grace_s=row["grace_s"], at=now)

    async def _maybe_up(self, conn: AsyncConnection, row: dict[str, Any], *, now: datetime,
                        result: RoundResult) -> None:
        status = self._status(row, now)
        if status not in (NodeStatus.UP, NodeStatus.LATE):
            return  # an old row (a replay): still down; the deadline path has it
        if row["status"] is None:  # first known state: recorded, not announced
            await self._save(conn, row, status="up", since=row["last_ok_at"], damping=None)
            return
        if row["paused"]:  # recorded, not announced: unpausing a node that came back sends nothing
            if row["status"] != "up":
                await self._save(conn, row, status="up", since=row["last_ok_at"], damping=None)
            return
        if row["status"] != "down":
            return
        down_since = row["since"]
        back = (await (await conn.execute(
            RETURN_TIME_SQL, (row["node_id"], down_since - timedelta(seconds=row["grace_s"]), now))).fetchone())[0]
        await self._change(conn, row, status="up", event=EVENT_UP, since=back or row["last_ok_at"],
                           now=now, result=result)

    async def _down(self, conn: AsyncConnection, row: dict[str, Any], *, now: datetime, result: RoundResult) -> None:
        if self._status(row, now) is not NodeStatus.DOWN:
            return  # cannot happen while alert_after = last_ok_at + grace; kept as the definition's guard
        since = row["alert_after"]
        if row["status"] is None or row["paused"]:
            await self._save(conn, row, status="down", since=since, damping=None)
            return
        if row["status"] == "down":
            return
        await self._change(conn, row, status="down", event=EVENT_DOWN, since=since, now=now, result=result)

    async def _unmuted(self, conn: AsyncConnection, row: dict[str, Any], *, now: datetime,
                       result: RoundResult) -> None:
        event = EVENT_DOWN if row["status"] == "down" else EVENT_UP
        if event == row["notified"] or row["paused"]:
            # Nothing new to tell: the window just closes.
            await self._save(conn, row, status=row["status"], since=row["since"],
                             damping=DampingDecision(False, row["window_started_at"], row["window_messages"], None),
                             suppressed=0)
            return
        decision = DampingDecision(True, now, 1, None)  # the catch-up opens the next window
        await self._send(conn, row, event=event, since=row["since"], now=now, flapping=True,
                         suppressed=row["flaps"], result=result)
        await self._save(conn, row, status=row["status"], since=row["since"], damping=decision,
                         suppressed=0, notified=event)

    async def _change(self, conn: AsyncConnection, row: dict[str, Any], *, status: str, event: str,
                      since: datetime, now: datetime, result: RoundResult) -> None:
        state = Damping(row["window_started_at"], row["window_messages"] or 0, row["flaps"] or 0)
        decision = damp(state, now=now, window=self.flap_window, limit=self.limit)
        if decision.send:
            # Changes muted in the previous window are told with the first message after it.
            await self._send(conn, row, event=event, since=since, now=now, flapping=state.suppressed > 0,
                             suppressed=state.suppressed, result=result)
            await self._save(conn, row, status=status, since=since, damping=decision, suppressed=0, notified=event)
        else:
            result.suppressed += 1
            await self._save(conn, row, status=status, since=since, damping=decision,
                             suppressed=state.suppressed + 1)

    async def _send(self, conn: AsyncConnection, row: dict[str, Any], *, event: str, since: datetime,
                    now: datetime, flapping: bool, suppressed: int, result: RoundResult) -> None:
        body = payload(row, event=event, since=since, flapping=flapping, suppressed=suppressed)
        cur = await conn.execute(ENQUEUE_SQL, {"node_id": row["node_id"], "event": event, "payload": Jsonb(body),
                                               "now": now, "operator_id": row["operator_id"]})
        result.messages.append((row["node_id"], event))
        result.queued += cur.rowcount

    async def _save(self, conn: AsyncConnection, row: dict[str, Any], *, status: str, since: datetime,
                    damping: DampingDecision | None, suppressed: int | None = None,
                    notified: str | None = None) -> None:
        self._pending.append({
            "node_id": row["node_id"], "status": status, "since": since,
            "flaps": (row["flaps"] or 0) if suppressed is None else suppressed,
            "muted_until": damping.muted_until if damping else None,
            "window_started_at": damping.window_started_at if damping else row["window_started_at"],
            "window_messages": damping.window_messages if damping else (row["window_messages"] or 0),
            "notified": notified or row["notified"],
        })

    async def _flush(self, conn: AsyncConnection) -> None:
        if self._pending:
            async with conn.cursor() as cur:
                await cur.executemany(SAVE_STATE_SQL, self._pending)
            self._pending = []


class AlertLoop(BackgroundLoop):
    """Evaluates every ``eval_s`` and wakes the deliverer when a round queued messages.

    ``async with AlertLoop(pool, ...):`` (started from the app's cleanup_ctx).
    """

    TASK_NAME = "fleetscope-alerts"

    def __init__(self, pool: AsyncConnectionPool, *, eval_s: float, flap_window_s: float,
                 registry: CollectorRegistry | None = None, on_queued: Callable[[], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._pool = pool
        self._eval_s = eval_s
        self._evaluator = Evaluator(flap_window=timedelta(seconds=flap_window_s))
        self._on_queued = on_queued
        self._clock = clock
        # Its own registry when none is given: never prometheus_client's global one.
        kw = {"registry": registry if registry is not None else CollectorRegistry()}
        self.rounds = Counter("fleetscope_alert_rounds", "Alert evaluation rounds by result (ok, skipped, error).",
                              ["result"], **kw)
        self.events = Counter("fleetscope_alert_events", "Node state changes by event and whether they were sent "
                              "(sent, damped).", ["event", "outcome"], **kw)
        self.last_round = Gauge("fleetscope_alert_last_round_timestamp_seconds",
                                "When the last alert evaluation round finished.", **kw)

    async def run_once(self) -> RoundResult:
        async with self._pool.connection() as conn:
            result = await self._evaluator.run_round(conn, now=self._clock())
        if not result.ran:
            self.rounds.labels("skipped").inc()
            return result
        self.rounds.labels("ok").inc()
        self.last_round.set_to_current_time()
        for _node, event in result.messages:
            self.events.labels(event, "sent").inc()
        if result.suppressed:
            self.events.labels("change", "damped").inc(result.suppressed)
        if result.queued and self._on_queued is not None:
            self._on_queued()
        return result

    async def _loop(self) -> None:
        while True:
            try:
                result = await self.run_once()
                if result.messages:
                    log.info("alerts: %s", ", ".join(f"node {n} {e}" for n, e in result.messages))
            except (psycopg.Error, OSError) as err:  # the database is away; so is the data to judge
                self.rounds.labels("error").inc()
                log.warning("alert round skipped: %s", str(err).strip())
            except Exception:
                self.rounds.labels("error").inc()
                log.exception("alert round failed")
            await asyncio.sleep(self._eval_s)
