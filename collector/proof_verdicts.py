"""Proof verdicts: storing each GPU's outcome with the finding it opens or resolves, and the timers.

A verdict is written once per challenge (``WHERE verdict IS NULL``: whoever
decides first, the handler or a timer, wins; the other sees nothing
updated) and, in the same transaction, the GPU claim's ``proof_failed``
integrity finding is opened or refreshed (failed) or resolved (passed):
DESIGN.md's "flagged when its latest proof failed". A no answer changes no
finding: the GPU simply stays unverified.

The timers are one indexed statement (``proof_challenges_open`` holds only
undecided rows) run every second by the round loop (collector/proof_rounds.py):
an offer not started within START_TIMEOUT_S is no answer, a started
challenge without a root by its deadline and a committed one not opened
within OPEN_TIMEOUT_S have failed. Each timer waits TIMER_GRACE_S more, so
that a request that arrived in time but is still being stored is judged by
its own receive time, not by the timer.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fleetscope import proof
from fleetscope.integrity.findings import UPSERT_SQL

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import AsyncConnection

FINDING_KIND = proof.FAILED_FINDING_KIND
# Requests received before a deadline may still be in the handler (waiting
# for the database); the timers leave them this long to be stored.
TIMER_GRACE_S = 2.0
NO_START = f"no answer: the host did not ask for its seed within {proof.START_TIMEOUT_S:g} s"
NO_ROOT = "late: no commitment by the deadline"
NOT_OPENED = "entries not opened"
RESTARTED = "the collector restarted during the round"

DECIDE_SQL = """
UPDATE proof_challenges
   SET verdict = %(verdict)s, reason = nullif(%(reason)s, ''), seconds = %(seconds)s, tflops = %(tflops)s,
       decided_at = %(at)s,
       root = coalesce(%(root)s, root), committed_at = coalesce(%(committed_at)s, committed_at),
       columns = coalesce(%(columns)s::integer[], columns), openings = coalesce(%(openings)s::jsonb, openings)
 WHERE round_id = %(round_id)s AND node_id = %(node_id)s AND gpu_uuid = %(gpu_uuid)s AND verdict IS NULL
RETURNING round_id
"""

RESOLVE_SQL = """
UPDATE integrity_findings SET resolved_at = %(at)s, resolution = %(resolution)s
 WHERE kind = 'proof_failed' AND node_id = %(node_id)s AND gpu_uuid = %(gpu_uuid)s AND resolved_at IS NULL
   AND first_seen <= %(at)s
"""

# Every overdue undecided challenge, decided in one statement. The conditions
# are in the UPDATE's own WHERE so that PostgreSQL re-checks them on the row
# version a concurrent start or commit just wrote (READ COMMITTED).
EXPIRE_SQL = """
UPDATE proof_challenges
   SET verdict = CASE WHEN started_at IS NULL THEN 'no_answer' ELSE 'failed' END,
       reason = CASE WHEN started_at IS NULL THEN %(no_start)s WHEN root IS NULL THEN %(no_root)s
                     ELSE %(not_opened)s END,
       decided_at = %(at)s
 WHERE verdict IS NULL AND (
        (started_at IS NULL AND offered_at < %(at)s - make_interval(secs => %(start_s)s))
     OR (started_at IS NOT NULL AND root IS NULL
         AND offered_at + make_interval(secs => budget_s + coalesce(rtt_s, 0) + %(grace_s)s) < %(at)s)
     OR (root IS NOT NULL AND committed_at < %(at)s - make_interval(secs => %(open_s)s)))
RETURNING round_id, node_id, gpu_uuid, verdict, reason
"""

# What an earlier process of this collector left undecided: its waiting
# hosts were cut off by our restart, so no answer, never a failure.
RESTART_SQL = """
UPDATE proof_challenges c SET verdict = 'no_answer', reason = %(reason)s, decided_at = %(at)s
  FROM proof_rounds r
 WHERE r.round_id = c.round_id AND r.collector_id = %(collector_id)s AND c.verdict IS NULL
RETURNING c.round_id, c.node_id, c.gpu_uuid, c.verdict, c.reason
"""


async def decide(conn: AsyncConnection, *, round_id: int, node_id: int, gpu_uuid: str, verdict: proof.Verdict,
                 at: datetime, root: str | None = None, committed_at: datetime | None = None,
                 columns: list[int] | None = None, openings: list[dict[str, Any]] | None = None) -> bool:
    """Store ``verdict`` for one undecided challenge, with its finding; False if it was decided already.

    ``conn`` must be in a transaction: the verdict and the finding go together.
    """
    cur = await conn.execute(DECIDE_SQL, {
        "verdict": verdict.verdict, "reason": verdict.reason, "seconds": verdict.seconds,
        "tflops": verdict.tflops, "at": at, "root": root, "committed_at": committed_at, "columns": columns,
        "openings": json.dumps(openings) if openings is not None else None,
        "round_id": round_id, "node_id": node_id, "gpu_uuid": gpu_uuid})
    if await cur.fetchone() is None:
        return False
    if verdict.verdict == "failed":
        await open_findings(conn, [(round_id, node_id, gpu_uuid, verdict.reason)], at=at)
    elif verdict.verdict == "passed":
        await conn.execute(RESOLVE_SQL, {"at": at, "node_id": node_id, "gpu_uuid": gpu_uuid,
                                         "resolution": f"passed proof in round {round_id}"})
    return True


async def open_findings(conn: AsyncConnection, failed: list[tuple[int, int, str, str]], *, at: datetime) -> None:
    """Open (or refresh) the proof_failed finding of each (round_id, node_id, gpu_uuid, reason)."""
    if not failed:
        return
    latest = {(node_id, uuid): (round_id, reason) for round_id, node_id, uuid, reason in sorted(failed)}
    keys = sorted(latest)
    await conn.execute(UPSERT_SQL, {
        "kind": FINDING_KIND, "at": at, "nodes": [k[0] for k in keys], "uuids": [k[1] for k in keys],
        "subjects": [""] * len(keys),
        "evidence": [json.dumps({"round_id": latest[k][0], "reason": latest[k][1]}, sort_keys=True) for k in keys]})


async def expire(conn: AsyncConnection, *, at: datetime) -> list[tuple[int, int, str, str, str]]:
    """Decide every challenge whose timer ran out by ``at``; returns (round, node, uuid, verdict, reason) each."""
    async with conn.transaction():
        cur = await conn.execute(EXPIRE_SQL, {
            "at": at, "no_start": NO_START, "no_root": NO_ROOT, "not_opened": NOT_OPENED,
            "start_s": proof.START_TIMEOUT_S + TIMER_GRACE_S, "grace_s": TIMER_GRACE_S,
            "open_s": proof.OPEN_TIMEOUT_S + TIMER_GRACE_S})
        decided = await cur.fetchall()
        await open_findings(conn, [(r, n, u, why) for r, n, u, verdict, why in decided if verdict == "failed"],
                            at=at)
    return decided


async def close_after_restart(conn: AsyncConnection, *, collector_id: str,
                              at: datetime) -> list[tuple[int, int, str, str, str]]:
    """Close what an earlier process of ``collector_id`` left undecided, as no answer."""
    async with conn.transaction():
        cur = await conn.execute(RESTART_SQL, {"reason": RESTARTED, "at": at, "collector_id": collector_id})
        return await cur.fetchall()
