"""The explorer's time series, per time range: what its charts draw (issue 16).

Every series is a definition evaluated at points or over buckets, never a
number of its own:

- the fleet over time: the snapshot's own counts at each point
  (``explorer.fleet_point``), every ``Range.fleet_step``;
- GPU-hours and revenue per bucket: ``accounting.accrual`` over each bucket;
- a node's uptime per bar: ``uptime.uptime`` over each bar (slots in which
  fleetscope was not observing are left out, as everywhere);
- a node's utilisation: its GPU telemetry's means per ``Range.telemetry_step_s``;
- a node's reputation: ``reputation.node_reputation`` at each point;
- the annotations: fleet jumps (the fleet_jump findings' own times) and our
  own outages, the gaps between the collectors' observing periods (the
  periods every node's uptime leaves out: fleetscope/uptime.py).

Each range starts no earlier than the fleet's first GPU (or the node's
registration), so a young fleet's 30-day chart is not 23 days of zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from fleetscope import accounting
from fleetscope.snapshot import format_time

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Range:
    """One time range of the charts and the steps its series are drawn at."""

    name: str
    span: timedelta
    fleet_step: timedelta      # fleet-over-time points
    money_bucket: timedelta    # GPU-hours and revenue bars
    uptime_bar: timedelta      # a node's uptime bars
    telemetry_step_s: int      # a node's utilisation means
    reputation_step: timedelta  # a node's reputation points


# Steps chosen for 50-100 points or ~30 bars a chart: readable, and each point
# (a snapshot's counts, a reputation) computed once and kept. A fleet point is
# a snapshot's counts (0.6-2 s at 100,000 GPUs on the 2-core box: the first
# render of a range on a fresh server pays for all of them), so the longer
# ranges step coarser; their steps are multiples of 15 minutes, so points are
# shared between ranges.
RANGES: dict[str, Range] = {r.name: r for r in (
    Range("24h", timedelta(hours=24), timedelta(minutes=15), timedelta(hours=1), timedelta(hours=1), 600,
          timedelta(hours=2)),
    Range("7d", timedelta(days=7), timedelta(hours=3), timedelta(days=1), timedelta(hours=6), 3600,
          timedelta(hours=12)),
    Range("30d", timedelta(days=30), timedelta(hours=12), timedelta(days=1), timedelta(days=1), 6 * 3600,
          timedelta(days=1)),
)}
DEFAULT_RANGE = "24h"
# A gap between observing periods shorter than this is a collector restart,
# not an outage worth marking (the writer's heartbeat is seconds apart).
MIN_OUTAGE = timedelta(minutes=2)


def get_range(name: str | None) -> Range:
    """The range called ``name`` (None: the default); KeyError for an unknown name."""
    return RANGES[DEFAULT_RANGE if name is None else name]


def grid(at: datetime, *, span: timedelta, step: timedelta, since: datetime | None = None) -> list[datetime]:
    """Multiples of ``step`` (epoch-aligned) in [at - span, at], none before ``since``, and ``at``."""
    step_s = int(step.total_seconds())
    first = int((at - span).timestamp())
    if since is not None:  # from the first step at or after it: no point before anything existed
        first = max(first, math.ceil(since.timestamp()))
    last = int(at.timestamp()) // step_s * step_s
    times = [datetime.fromtimestamp(t, timezone.utc) for t in range(-(-first // step_s) * step_s, last + 1, step_s)]
    if not times or times[-1] != at:
        times.append(at)
    return times


def buckets(at: datetime, *, span: timedelta, width: timedelta,
            since: datetime | None = None) -> list[tuple[datetime, datetime]]:
    """[start, end) buckets of ``width`` (UTC-aligned) covering (at - span, at]; the last ends at ``at``."""
    width_s = int(width.total_seconds())
    lo = int((at - span).timestamp())
    if since is not None:
        lo = max(lo, int(since.timestamp()))
    first = lo // width_s * width_s
    out = []
    for t in range(first, int(at.timestamp()), width_s):
        start = datetime.fromtimestamp(t, timezone.utc)
        out.append((start, min(start + width, at)))
    return out


def fleet_start(conn: psycopg.Connection) -> datetime | None:
    """When the fleet's first GPU was first seen (None: none yet): where its charts begin."""
    return conn.execute("SELECT min(first_seen) FROM gpus").fetchone()[0]


def accrual_series(conn: psycopg.Connection, *, at: datetime, rng: Range,
                   since: datetime | None = None) -> list[dict[str, Any]]:
    """GPU-hours and accrued revenue per bucket of ``rng`` up to ``at`` (the last bucket runs to ``at``)."""
    out = []
    for start, end in buckets(at, span=rng.span, width=rng.money_bucket, since=since):
        acc = accounting.accrual(conn, start=start, end=end)
        out.append({"start": format_time(start), "end": format_time(end), "gpu_hours": float(acc.gpu_hours),
                    "revenue_usd": float(acc.revenue_usd),
                    "partial": end - start < rng.money_bucket})
    return out


FLEET_JUMPS_SQL = """
SELECT evidence ->> 'at', evidence ->> 'metric', evidence -> 'before', evidence -> 'after', resolved_at IS NULL
  FROM integrity_findings
 WHERE kind = 'fleet_jump' AND first_seen <= %(at)s
   AND (evidence ->> 'at')::timestamptz > %(start)s AND (evidence ->> 'at')::timestamptz <= %(at)s
 ORDER BY evidence ->> 'at', evidence ->> 'metric'
"""
PERIODS_SQL = """
SELECT started_at, last_beat_at FROM observing_periods
 WHERE last_beat_at >= %(start)s - interval '1 day' AND started_at <= %(at)s
 ORDER BY started_at
"""


def annotations(conn: psycopg.Connection, *, at: datetime, start: datetime) -> dict[str, list[dict[str, Any]]]:
    """Fleet jumps and our own outages in (start, at]: what the charts mark.

    Jumps: each fleet_jump finding's event (its evidence: the time, the metric,
    the counts before and after). Outages: the gaps of at least MIN_OUTAGE
    between one observing period's last heartbeat and the next period's
    start; uptime leaves these slots out for every node.
    """
    jumps = [{"at": a, "metric": m, "before": b, "after": f, "open": o}
             for a, m, b, f, o in conn.execute(FLEET_JUMPS_SQL, {"at": at, "start": start})]
    outages = []
    covered: datetime | None = None
    for began, beat in conn.execute(PERIODS_SQL, {"start": start, "at": at}).fetchall():
        if covered is not None and began - covered >= MIN_OUTAGE and began > start and covered < at:
            outages.append({"start": format_time(max(covered, start)), "end": format_time(min(began, at)),
                            "minutes": round((began - covered).total_seconds() / 60, 1)})
        covered = beat if covered is None else max(covered, beat)
    return {"fleet_jumps": jumps, "outages": outages}


def node_uptime_bars(conn: psycopg.Connection, node_id: int, *, at: datetime, rng: Range,
                     registered_at: datetime) -> list[dict[str, Any]]:
    """The node's uptime per bar of ``rng``: ``uptime.uptime`` over each (None where no slot could be judged)."""
    from fleetscope.uptime import uptime

    out = []
    for start, end in buckets(at, span=rng.span, width=rng.uptime_bar, since=registered_at):
        u = uptime(conn, node_id, start=start, end=end)
        if u is None:
            break
        out.append({"start": format_time(start), "end": format_time(end), "ratio": u.ratio,
                    "ok_slots": u.ok_slots, "observed_slots": u.observed_slots, "window_slots": u.window_slots})
    return out


def node_reputation_points(conn: psycopg.Connection, node_id: int, *, at: datetime, times: list[datetime]
                           ) -> list[dict[str, Any]]:
    """The node's reputation (score and inputs) at each of ``times``."""
    from fleetscope.reputation import node_reputation

    out = []
    for t in times:
        rep = node_reputation(conn, node_id, at=t)
        if rep is None:
            break
        d = rep.as_dict()
        out.append({"at": format_time(t), "score": d["score"], "V": d["inputs"]["V"], "U7": d["inputs"]["U7"],
                    "U1": d["inputs"]["U1"], "J": d["inputs"]["J"]})
    return out
