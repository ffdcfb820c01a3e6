"""fleet_jump: a step in registered or online GPUs far outside the recent variation (DESIGN.md, Integrity).

The history is ``fleet_gpu_counts``: the snapshot's registered and online GPU
counts, recorded by the collector's maintenance loop on every integrity run
(``record_counts``). For each recorded point, its change over ``span`` (the
count now minus the count ``span`` earlier) is compared with all such changes
over ``history``, robustly: a change is a jump when it is further from their
median than

    threshold = max(k x 1.4826 x MAD, min_abs, min_rel x the count before)

(1.4826 x MAD estimates the standard deviation of normal noise; the median
and the MAD ignore the jumps themselves, so one jump does not hide another).
The floors stop a perfectly regular fleet (MAD 0) from flagging its next
handful of GPUs. Consecutive jumping points are one event: its "at" is the
first of them, "before" the count ``span`` before that, "after" the count at
its last point; the dashboard annotates its fleet charts with these. A jump
stays open while it is within ``history`` and resolves when it leaves it.

Defaults (configurable, FLEETSCOPE_JUMP_* in collector/settings.py): span 30
minutes, history 7 days, k = 8, min_abs = 100 GPUs, min_rel = 2 %. A fleet
that grows by a few hundred GPUs a day and whose online count follows the
day changes by tens per 30 minutes; 20,000 GPUs in 30 minutes is hundreds of
robust standard deviations and 25 % of a 80,000-GPU fleet.
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fleetscope.integrity.findings import Found
from fleetscope.times import format_time

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg

KIND = "fleet_jump"
RESOLUTION = "the jump is older than the history the check judges"
METRICS = ("registered", "online")
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class JumpSettings:
    """How fleet_jump judges a change (module docstring)."""

    span: timedelta = timedelta(minutes=30)
    history: timedelta = timedelta(days=7)
    k: float = 8.0
    min_abs: int = 100
    min_rel: float = 0.02
    # Fewer changes than this to learn from (a fleetscope that just started):
    # judge nothing yet.
    min_points: int = 12

    @classmethod
    def from_env(cls) -> JumpSettings:
        """The defaults, overridden by FLEETSCOPE_JUMP_{SPAN_S,HISTORY_S,K,MIN_ABS,MIN_REL}; a bad value
        raises FleetscopeError naming the variable (checked once, at start-up)."""
        from fleetscope.config import env_float, env_int

        d = cls()
        return cls(
            span=timedelta(seconds=env_int("FLEETSCOPE_JUMP_SPAN_S", int(d.span.total_seconds()), lo=60, hi=86400)),
            history=timedelta(seconds=env_int("FLEETSCOPE_JUMP_HISTORY_S", int(d.history.total_seconds()),
                                              lo=3600, hi=90 * 86400)),
            k=env_float("FLEETSCOPE_JUMP_K", d.k, lo=1.0, hi=1000.0),
            min_abs=env_int("FLEETSCOPE_JUMP_MIN_ABS", d.min_abs, lo=0, hi=10**9),
            min_rel=env_float("FLEETSCOPE_JUMP_MIN_REL", d.min_rel, lo=0.0, hi=10.0))


@dataclass(frozen=True)
class Jump:
    """One jump event in one metric."""

    metric: str
    at: datetime
    before: int
    after: int
    median_change: float
    mad: float
    threshold: float

    @property
    def change(self) -> int:
        return self.after - self.before


def find_jumps(points: Sequence[tuple[datetime, int]], *, metric: str,
               settings: JumpSettings = JumpSettings()) -> list[Jump]:
    """The jump events in a time-ordered series of (time, count); empty when there is too little history."""
    times = [t for t, _ in points]
    changes: list[tuple[int, int, int]] = []  # (index, count span earlier, change)
    for i, (t, value) in enumerate(points):
        j = bisect.bisect_right(times, t - settings.span) - 1
        if j < 0:
            continue
        changes.append((i, points[j][1], value - points[j][1]))
    if len(changes) < settings.min_points:
        return []
    deltas = [c for _, _, c in changes]
    median = statistics.median(deltas)
    mad = statistics.median(abs(d - median) for d in deltas)
    jumps: list[Jump] = []
    event: list[tuple[int, int, int, float]] = []

    def close() -> None:
        if event:
            first, last = event[0], event[-1]
            jumps.append(Jump(metric=metric, at=points[first[0]][0], before=first[1], after=points[last[0]][1],
                              median_change=median, mad=mad, threshold=max(e[3] for e in event)))
            event.clear()

    for i, base, change in changes:
        threshold = max(settings.k * MAD_TO_SIGMA * mad, settings.min_abs, settings.min_rel * base)
        if abs(change - median) > threshold:
            if event and (change > median) != (event[-1][2] > median):
                close()  # a jump up then straight down is two events
            event.append((i, base, change, threshold))
        else:
            close()
    close()
    return jumps


HISTORY_SQL = "SELECT at, registered, online FROM fleet_gpu_counts WHERE at > %(since)s AND at <= %(at)s ORDER BY at"
RECORD_SQL = """
INSERT INTO fleet_gpu_counts (at, registered, online) VALUES (%(at)s, %(registered)s, %(online)s)
ON CONFLICT (at) DO UPDATE SET registered = EXCLUDED.registered, online = EXCLUDED.online
"""


def record_counts(conn: psycopg.Connection, *, at: datetime, registered: int, online: int) -> None:
    """Record the fleet's registered and online GPU counts at ``at`` (idempotent per instant)."""
    conn.execute(RECORD_SQL, {"at": at, "registered": registered, "online": online})


def find(conn: psycopg.Connection, *, at: datetime, settings: JumpSettings = JumpSettings()) -> list[Found]:
    """Every jump event in the recorded counts within ``settings.history`` before ``at``."""
    rows = conn.execute(HISTORY_SQL, {"at": at, "since": at - settings.history}).fetchall()
    found = []
    for column, metric in enumerate(METRICS, start=1):
        for jump in find_jumps([(r[0], r[column]) for r in rows], metric=metric, settings=settings):
            found.append(Found(subject=f"{metric}@{format_time(jump.at)}", evidence={
                "at": format_time(jump.at), "metric": metric, "before": jump.before, "after": jump.after,
                "change": jump.change, "span_s": int(settings.span.total_seconds()),
                "median_change": jump.median_change, "mad": jump.mad, "threshold": jump.threshold}))
    return found
