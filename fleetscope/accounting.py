"""GPU-hours and accrued revenue over a window (DESIGN.md, Definitions).

GPU-hours in [start, end): the sum over jobs of gpu_count x hours of overlap
between the job and the window; a job with no end runs until ``end``.
Revenue (accrued, USD): the same, times each job's price per GPU-hour.
Computed in numeric and rounded to ``DECIMALS`` places, so every surface that
shows them prints the same digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

DECIMALS = 6

# %(start)s may be '-infinity' (the "total" window). The overlap of a job and
# [start, end) is least(job end, end) - greatest(job start, start).
# Seconds are summed and divided by 3600 once: exact in numeric either way,
# and dividing each job's seconds first makes every term a long-scale numeric
# (a fifth slower over 100,000 jobs: bench/bench_snapshot.py).
WINDOW_SQL = """
SELECT coalesce(round(sum(gpu_count * seconds) / 3600, {d}), 0) AS gpu_hours,
       coalesce(round(sum(gpu_count * seconds * price_per_gpu_hour) / 3600, {d}), 0) AS revenue_usd
  FROM (SELECT gpu_count, price_per_gpu_hour,
               extract(epoch FROM least(coalesce(ended_at, %(end)s), %(end)s)
                                 - greatest(started_at, %(start)s)) AS seconds
          FROM jobs
         WHERE started_at < %(end)s AND coalesce(ended_at, 'infinity') > %(start)s) overlap
""".format(d=DECIMALS)

# Per node, the same sum: what the consistency check compares with online hours.
NODE_WINDOW_SQL = """
SELECT node_id,
       sum(gpu_count * extract(epoch FROM least(coalesce(ended_at, %(end)s), %(end)s)
                                        - greatest(started_at, %(start)s)) / 3600) AS gpu_hours
  FROM jobs
 WHERE started_at < %(end)s AND coalesce(ended_at, 'infinity') > %(start)s
 GROUP BY node_id
"""


@dataclass(frozen=True)
class Accrual:
    """GPU-hours and accrued revenue (USD) over one window."""

    gpu_hours: Decimal
    revenue_usd: Decimal


def accrual(conn: psycopg.Connection, *, start: datetime | str, end: datetime) -> Accrual:
    """GPU-hours and accrued revenue of all jobs over [start, end).

    ``start`` may be the string '-infinity' for the all-time total.
    """
    row = conn.execute(WINDOW_SQL, {"start": start, "end": end}).fetchone()
    return Accrual(gpu_hours=row[0], revenue_usd=row[1])


def job_accrual(*, gpu_count: int, price_per_gpu_hour: Decimal, started_at: datetime,
                ended_at: datetime | None, start: datetime | None, end: datetime) -> Accrual:
    """One job's share of a window, in Python: the same definition as WINDOW_SQL.

    Used by bundle verification and by tests to hold the SQL to the definition.
    ``start`` None means the all-time window.
    """
    job_end = min(ended_at or end, end)
    job_start = started_at if start is None else max(started_at, start)
    if job_end <= job_start:
        return Accrual(Decimal(0), Decimal(0))
    # Whole microseconds, never through a float: the SQL works in exact numeric.
    seconds = Decimal((job_end - job_start) // timedelta(microseconds=1)) / Decimal(1_000_000)
    hours = seconds / Decimal(3600)
    return Accrual(gpu_count * hours, gpu_count * hours * Decimal(price_per_gpu_hour))
