"""Proof rounds: when they open, whom they challenge, and the loop that runs them.

A round (DESIGN.md, "Proof of GPU"; docs/proof.md) opens at an unpredictable
time, a gap uniform in 0.5-1.5 x ``proof_interval_s`` after the last, drawn
from the operating system's randomness (``secrets.SystemRandom``) so that no
host can predict it from earlier rounds. It challenges a random share of the
*eligible* nodes at one instant, every claimed GPU of a chosen node at once.
A node is eligible when

- its prover is waiting in a long-poll on this collector at that instant
  (the waiting room is ``collector.proof.Proofs``);
- no job of it is running (a hired GPU is never proved);
- its latest reported GPU set holds at least one GPU whose model is in the
  reference table (the others stay unverified: nothing to size them by);
- each of those GPUs' challenges in the last 24 h plus this one stay within
  ``MAX_SHARE_OF_DAY`` of a day (their ``budget_s`` summed).

``choose`` is the pure part of that; ``CANDIDATES_SQL`` and ``USED_SQL``
fetch its inputs; ``insert_round`` stores the round and its challenges.
``RoundLoop`` is the app component: it also runs the verdict timers
(collector/proof_verdicts.py) every second, and on start closes what an
earlier process of this collector left undecided.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import psycopg

from collector.background import BackgroundLoop
from fleetscope import gpu_models, proof

if TYPE_CHECKING:
    from collections.abc import Iterable

    from psycopg import AsyncConnection

    from collector.proof import Proofs

log = logging.getLogger("fleetscope.proof")

# Seconds between runs of the verdict timers: START_TIMEOUT_S is 10 s, so a
# no answer is recorded within about a second of it.
SWEEP_S = 1.0
# The gap between rounds, as a share of the interval (docs/proof.md).
GAP_LOW, GAP_HIGH = 0.5, 1.5
DAY_S = 86400.0

# The GPUs each waiting node reported last (its latest GPU set, healthy
# ones), with their claimed model and memory, for nodes with no job running
# at %(at)s (jobs: started_at <= at and not ended by then).
CANDIDATES_SQL = """
WITH sets AS (
    SELECT DISTINCT ON (s.node_id) s.node_id, s.healthy
      FROM node_gpu_sets s
     WHERE s.node_id = ANY(%(nodes)s::bigint[]) AND s.since <= %(at)s
     ORDER BY s.node_id, s.since DESC
)
SELECT s.node_id, g.gpu_uuid, g.model, g.memory_total_bytes
  FROM sets s
 CROSS JOIN LATERAL unnest(s.healthy) AS u(gpu_uuid)
  JOIN gpus g ON g.node_id = s.node_id AND g.gpu_uuid = u.gpu_uuid
 WHERE NOT EXISTS (SELECT 1 FROM jobs j
                    WHERE j.node_id = s.node_id AND j.started_at <= %(at)s
                      AND (j.ended_at IS NULL OR j.ended_at > %(at)s))
 ORDER BY s.node_id, g.gpu_uuid
"""

# Seconds of proof each GPU claim was asked for in the 24 h before %(at)s.
USED_SQL = """
SELECT node_id, gpu_uuid, sum(budget_s) FROM proof_challenges
 WHERE node_id = ANY(%(nodes)s::bigint[]) AND offered_at > %(at)s - interval '24 hours' AND offered_at <= %(at)s
 GROUP BY node_id, gpu_uuid
"""

INSERT_ROUND_SQL = """
INSERT INTO proof_rounds (opened_at, seed, protocol_version, scale, share, collector_id)
VALUES (%(at)s, %(seed)s, %(protocol)s, %(scale)s, %(share)s, %(collector_id)s)
RETURNING round_id
"""

INSERT_CHALLENGES_SQL = """
INSERT INTO proof_challenges (round_id, node_id, gpu_uuid, model, memory_total_bytes, n, k, reference_tflops,
                              budget_s, offered_at)
SELECT %(round_id)s, t.node_id, t.gpu_uuid, t.model, t.memory, t.n, t.k, t.ref, t.budget, %(at)s
  FROM unnest(%(nodes)s::bigint[], %(uuids)s::text[], %(models)s::text[], %(memory)s::bigint[], %(n)s::integer[],
              %(k)s::integer[], %(ref)s::float8[], %(budget)s::float8[])
       AS t(node_id, gpu_uuid, model, memory, n, k, ref, budget)
"""


@dataclass(frozen=True)
class Challenge:
    """One GPU's work in a round: the claim, its reference model's name and its size."""

    node_id: int
    gpu_uuid: str
    model: str
    size: proof.Size
    memory_total_bytes: int | None = None  # as claimed when the round opened: what the size was derived from

    def offer(self) -> dict[str, object]:
        """The GPU's entry in the challenge the host receives (docs/proof.md, wire format)."""
        return {"gpu_uuid": self.gpu_uuid, "model": self.model, **self.size.as_dict()}


def gap_s(interval_s: float, rng: secrets.SystemRandom) -> float:
    """Seconds until the next round: uniform in [GAP_LOW, GAP_HIGH] x ``interval_s``."""
    return rng.uniform(GAP_LOW, GAP_HIGH) * interval_s


def choose(candidates: Iterable[tuple[int, str, str | None, int | None]], used: dict[tuple[int, str], float], *,
           share: float, scale: float, rng: secrets.SystemRandom) -> list[Challenge]:
    """The challenges of a round: a random ``share`` (at least one) of the eligible nodes, all their GPUs.

    ``candidates``: (node_id, gpu_uuid, claimed model, claimed memory) of the
    waiting nodes without a running job (CANDIDATES_SQL); ``used``: seconds
    of proof each claim was asked for in the last 24 h (USED_SQL). A node is
    eligible when at least one of its GPUs has a reference model and none
    would pass MAX_SHARE_OF_DAY of a day with this round's work.
    """
    by_node: dict[int, list[Challenge]] = defaultdict(list)
    for node_id, gpu_uuid, model, memory in candidates:
        row = gpu_models.lookup(model)
        if row is None:
            continue
        size = proof.size_for(row, memory_bytes=memory, scale=scale)
        by_node[node_id].append(Challenge(node_id, gpu_uuid, row.model, size, memory))
    limit = proof.MAX_SHARE_OF_DAY * DAY_S
    eligible = sorted(node for node, gpus in by_node.items()
                      if all(used.get((c.node_id, c.gpu_uuid), 0.0) + c.size.budget_s <= limit for c in gpus))
    if not eligible:
        return []
    chosen = rng.sample(eligible, max(1, min(len(eligible), round(share * len(eligible)))))
    return [c for node in sorted(chosen) for c in by_node[node]]


async def plan(conn: AsyncConnection, waiting: list[int], *, at: datetime, share: float, scale: float,
               rng: secrets.SystemRandom) -> list[Challenge]:
    """The challenges of a round at ``at`` among the ``waiting`` nodes (``choose`` on the database's facts)."""
    params = {"nodes": waiting, "at": at}
    candidates = await (await conn.execute(CANDIDATES_SQL, params)).fetchall()
    if not candidates:
        return []
    used = {(n, u): float(s) for n, u, s in await (await conn.execute(USED_SQL, params)).fetchall()}
    return choose(candidates, used, share=share, scale=scale, rng=rng)


async def insert_round(conn: AsyncConnection, challenges: list[Challenge], *, at: datetime, seed: str,
                       share: float, scale: float, collector_id: str) -> int:
    """Store a round opened at ``at`` and its challenges (offered at ``at``); returns its id."""
    async with conn.transaction():
        cur = await conn.execute(INSERT_ROUND_SQL, {
            "at": at, "seed": seed, "protocol": proof.PROTOCOL_VERSION, "scale": scale, "share": share,
            "collector_id": collector_id})
        round_id = (await cur.fetchone())[0]
        await conn.execute(INSERT_CHALLENGES_SQL, {
            "round_id": round_id, "at": at, "nodes": [c.node_id for c in challenges],
            "uuids": [c.gpu_uuid for c in challenges], "models": [c.model for c in challenges],
            "memory": [c.memory_total_bytes for c in challenges],
            "n": [c.size.n for c in challenges], "k": [c.size.k for c in challenges],
            "ref": [c.size.reference_tflops for c in challenges], "budget": [c.size.budget_s for c in challenges]})
    return round_id


class RoundLoop(BackgroundLoop):
    """Opens rounds at random gaps and runs the verdict timers. ``async with RoundLoop(proofs, interval_s=...)``."""

    TASK_NAME = "fleetscope-proof-rounds"

    def __init__(self, proofs: Proofs, *, interval_s: float, rng: secrets.SystemRandom | None = None) -> None:
        self.proofs = proofs
        self.interval_s = interval_s
        self.rng = rng or secrets.SystemRandom()

    async def __aenter__(self) -> RoundLoop:
        try:
            closed = await self.proofs.close_after_restart()
            if closed:
                log.warning("closed %d proof challenges an earlier collector process left undecided", closed)
        except (psycopg.Error, OSError) as err:  # the database is away: the timers decide them later
            log.warning("could not close earlier proof challenges: %s", str(err).strip())
        return await super().__aenter__()

    async def _loop(self) -> None:
        next_round = time.monotonic() + gap_s(self.interval_s, self.rng)
        while True:
            try:
                await self.proofs.expire()
                if time.monotonic() >= next_round:
                    next_round = time.monotonic() + gap_s(self.interval_s, self.rng)
                    round_id = await self.proofs.open_round()
                    if round_id is not None:
                        log.info("proof round %d opened", round_id)
            except (psycopg.Error, OSError) as err:  # the database is away: try again next time
                log.warning("proof rounds: %s", str(err).strip())
            await asyncio.sleep(max(0.0, min(SWEEP_S, next_round - time.monotonic())))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
