"""A jump of 20,000 GPUs in 30 minutes is flagged on a fleet that grows by a few hundred a day; churn is not."""

from __future__ import annotations

import math
import random
from datetime import timedelta

from fleetscope.integrity import run_checks
from fleetscope.integrity.fleet_jump import find_jumps, record_counts
from tests.fleetdata import T0

STEP = timedelta(minutes=5)


def growing_fleet(days: int = 7, *, seed: int = 1) -> list[tuple]:
    """(time, registered, online) every 5 minutes: +300 GPUs a day, online following the day, with noise."""
    rng = random.Random(seed)
    points = []
    n = days * 24 * 12
    for i in range(n):
        t = T0 - STEP * (n - i)
        registered = 70_000 + round(300 * i / (24 * 12)) + rng.randint(-15, 15)
        day = math.sin(2 * math.pi * i / (24 * 12))
        online = round(registered * (0.88 + 0.04 * day)) + rng.randint(-40, 40)
        points.append((t, registered, online))
    return points


def test_ordinary_daily_growth_and_churn_are_not_jumps():
    points = growing_fleet()
    assert find_jumps([(t, r) for t, r, _ in points], metric="registered") == []
    assert find_jumps([(t, o) for t, _, o in points], metric="online") == []


def test_20000_gpus_in_30_minutes_is_a_jump_with_its_time_before_and_after(conn):
    points = growing_fleet()
    jump_at = points[-60][0]
    ramp = [timedelta(minutes=m) for m in (0, 5, 10, 15, 20, 25)]  # 20,000 added over 30 minutes
    for t, registered, online in points:
        added = sum(20_000 // 6 + (1 if k < 20_000 % 6 else 0)
                    for k, r in enumerate(ramp) if t >= jump_at + r)
        record_counts(conn, at=t, registered=registered + added, online=online + added)
    run_checks(conn, at=T0)
    rows = conn.execute("SELECT subject, evidence FROM integrity_findings WHERE kind = 'fleet_jump'"
                        " ORDER BY subject").fetchall()
    assert [r[0] for r in rows] == [f"online@{jump_at:%Y-%m-%dT%H:%M:%SZ}", f"registered@{jump_at:%Y-%m-%dT%H:%M:%SZ}"]
    for subject, evidence in rows:
        assert evidence["at"] == f"{jump_at:%Y-%m-%dT%H:%M:%SZ}"
        assert evidence["metric"] == subject.split("@")[0]
        assert 19_000 < evidence["after"] - evidence["before"] < 21_000
    # The same jump, judged again a minute later, is the same finding.
    assert run_checks(conn, at=T0 + timedelta(minutes=1))["fleet_jump"].opened == 0


def test_a_jump_leaves_the_open_findings_when_it_leaves_the_history(conn):
    points = growing_fleet(days=2)
    for i, (t, registered, online) in enumerate(points):
        step = 20_000 if i >= len(points) // 2 else 0
        record_counts(conn, at=t, registered=registered + step, online=online + step)
    run_checks(conn, at=T0)
    assert conn.execute("SELECT count(*) FROM integrity_findings WHERE resolved_at IS NULL").fetchone()[0] == 2
    run_checks(conn, at=T0 + timedelta(days=7))
    assert conn.execute("SELECT count(*) FROM integrity_findings WHERE resolved_at IS NULL").fetchone()[0] == 0
