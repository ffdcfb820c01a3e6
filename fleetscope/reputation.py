"""Node reputation, formula version 1 (DESIGN.md, Definitions).

    reputation = 100 x V x (0.5 U7 + 0.3 U1 + 0.2 J), from 0 to 100

U7 and U1 are the node's uptime over the 7 days and the 24 hours before the
as-of time (fleetscope/uptime.py); J is its job success ratio over 30 days
with a Beta(1, 1) prior; V is 1 when all its GPUs are verified, 0.5 when some
are unverified and 0 when any is flagged. Every input is returned beside the
score, so an operator can see exactly why it is what it is, and
``fleetscope verify`` recomputes it from a published bundle with these same
functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fleetscope import proof
from fleetscope import uptime as uptime_mod
from fleetscope.snapshot import OPEN_FINDINGS_SQL

if TYPE_CHECKING:
    import psycopg

FORMULA_VERSION = 1
FORMULA = "100 x V x (0.5 U7 + 0.3 U1 + 0.2 J)"
WEIGHT_U7 = 0.5
WEIGHT_U1 = 0.3
WEIGHT_J = 0.2
U7_WINDOW = timedelta(days=7)
U1_WINDOW = timedelta(hours=24)
JOBS_WINDOW = timedelta(days=30)
# Scores are published to two decimals: enough to rank, and a fixed rendering
# that a recomputation in any language can match exactly.
SCORE_DECIMALS = 2


def job_success_ratio(*, succeeded: int, finished: int) -> float:
    """J: (succeeded + 1) / (finished + 2), the Beta(1, 1) posterior mean.

    A node with no finished jobs gets 0.5, neither rewarded nor punished for
    having none; each finished job moves it towards the node's real ratio.
    """
    if not 0 <= succeeded <= finished:
        raise ValueError(f"succeeded ({succeeded}) must be between 0 and finished ({finished})")
    return (succeeded + 1) / (finished + 2)


def verification_factor(*, verified: int, unverified: int, flagged: int) -> float:
    """V: 0 when any GPU is flagged, 1 when all are verified, else 0.5.

    A node that has reported no GPU yet has nothing verified: 0.5, not the
    vacuous 1 (a node must not reach the top score before showing a GPU).
    """
    if flagged > 0:
        return 0.0
    if verified > 0 and unverified == 0:
        return 1.0
    return 0.5


def reputation_score(*, u7: float | None, u1: float | None, j: float, v: float) -> float:
    """The score, 0 to 100, rounded to SCORE_DECIMALS.

    An uptime that could not be judged (no slot in its window in which
    fleetscope was observing, ``Uptime.ratio`` None) counts as 0: a score is
    earned by being seen.
    """
    raw = 100 * v * (WEIGHT_U7 * (u7 or 0.0) + WEIGHT_U1 * (u1 or 0.0) + WEIGHT_J * j)
    return round(raw, SCORE_DECIMALS)


@dataclass(frozen=True)
class Reputation:
    """A node's reputation with every input that produced it."""

    score: float
    v: float
    u7: float | None
    u1: float | None
    j: float
    jobs_succeeded: int
    jobs_finished: int
    gpus_verified: int
    gpus_unverified: int
    gpus_flagged: int
    uptime_7d: uptime_mod.Uptime
    uptime_24h: uptime_mod.Uptime

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape the API and the bundle use: score, formula and inputs."""
        return {
            "score": self.score,
            "formula_version": FORMULA_VERSION,
            "formula": FORMULA,
            "inputs": {
                "V": self.v, "U7": self.u7, "U1": self.u1, "J": self.j,
                "jobs_succeeded_30d": self.jobs_succeeded, "jobs_finished_30d": self.jobs_finished,
                "gpus_verified": self.gpus_verified, "gpus_unverified": self.gpus_unverified,
                "gpus_flagged": self.gpus_flagged,
                "uptime_7d_slots": asdict(self.uptime_7d), "uptime_24h_slots": asdict(self.uptime_24h),
            },
        }


def reputation_of(*, uptime_7d: uptime_mod.Uptime, uptime_24h: uptime_mod.Uptime, jobs_succeeded: int,
                  jobs_finished: int, gpus_verified: int, gpus_unverified: int, gpus_flagged: int) -> Reputation:
    """A node's reputation from its inputs (pure: what ``fleetscope verify`` calls)."""
    j = job_success_ratio(succeeded=jobs_succeeded, finished=jobs_finished)
    v = verification_factor(verified=gpus_verified, unverified=gpus_unverified, flagged=gpus_flagged)
    u7, u1 = uptime_7d.ratio, uptime_24h.ratio
    return Reputation(score=reputation_score(u7=u7, u1=u1, j=j, v=v), v=v, u7=u7, u1=u1, j=j,
                      jobs_succeeded=jobs_succeeded, jobs_finished=jobs_finished,
                      gpus_verified=gpus_verified, gpus_unverified=gpus_unverified, gpus_flagged=gpus_flagged,
                      uptime_7d=uptime_7d, uptime_24h=uptime_24h)


# Jobs that finished in (at - 30 d, at], by outcome.
JOBS_SQL = """
SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*)
  FROM jobs
 WHERE node_id = %(node_id)s AND status IN ('succeeded', 'failed')
   AND ended_at > %(since)s AND ended_at <= %(at)s
"""

# The node's GPUs registered by %(at)s, each verified, unverified or flagged,
# by the snapshot's rules (fleetscope/snapshot.py COUNTS_SQL): flagged when an
# open finding names its UUID (on any node) or names the node as a whole;
# verified when it passed a proof of GPU in the last 24 h (proof.PROVED_CLAIM_SQL)
# and it is not flagged.
VERIFICATION_SQL = """
WITH open_findings AS ({open_findings}), g AS (
    SELECT g.gpu_uuid, {proved} AS checked,
           EXISTS (SELECT 1 FROM open_findings f
                    WHERE f.gpu_uuid = g.gpu_uuid OR (f.gpu_uuid IS NULL AND f.node_id = g.node_id)) AS flagged
      FROM gpus g WHERE g.node_id = %(node_id)s AND g.first_seen <= %(at)s
)
SELECT count(*) FILTER (WHERE checked AND NOT flagged),
       count(*) FILTER (WHERE checked IS NOT TRUE AND NOT flagged),
       count(*) FILTER (WHERE flagged)
  FROM g
""".format(open_findings=OPEN_FINDINGS_SQL, proved=proof.PROVED_CLAIM_SQL)


def node_reputation(conn: psycopg.Connection, node_id: int, *, at: datetime) -> Reputation | None:
    """The reputation of ``node_id`` as of ``at``, or None if the node does not exist."""
    u7 = uptime_mod.uptime(conn, node_id, start=at - U7_WINDOW, end=at)
    if u7 is None:
        return None
    u1 = uptime_mod.uptime(conn, node_id, start=at - U1_WINDOW, end=at)
    succeeded, finished = conn.execute(JOBS_SQL, {"node_id": node_id, "since": at - JOBS_WINDOW,
                                                  "at": at}).fetchone()
    verified, unverified, flagged = conn.execute(VERIFICATION_SQL, {"node_id": node_id, "at": at}).fetchone()
    return reputation_of(uptime_7d=u7, uptime_24h=u1, jobs_succeeded=succeeded, jobs_finished=finished,
                         gpus_verified=verified, gpus_unverified=unverified, gpus_flagged=flagged)
