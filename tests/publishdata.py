"""A small fleet with a week of history, for the publication and verification tests."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from fleetscope.integrity import run_checks
from tests.fleetdata import T0, Fleet

AS_OF = T0


def week_fleet(conn: psycopg.Connection) -> list[int]:
    """Four nodes over 8 days: steady, flaky, gone offline, virtualised; jobs, shared UUIDs, observing gaps."""
    fleet = Fleet(conn)
    steady, flaky, gone, cheat = (fleet.node(registered_at=T0 - timedelta(days=8)) for _ in range(4))
    late = fleet.node(registered_at=T0 - timedelta(hours=30))
    fleet.gpus(steady, ["GPU-s1", "GPU-s2", "GPU-shared"], since=T0 - timedelta(days=8))
    fleet.gpus(flaky, ["GPU-f1", "GPU-shared"], since=T0 - timedelta(days=8), lost=["GPU-f2"])
    fleet.gpus(gone, ["GPU-g1"], since=T0 - timedelta(days=8), model="NVIDIA GeForce RTX 4090")
    fleet.gpus(cheat, ["GPU-c1", "GPU-c2"], since=T0 - timedelta(days=8), model="NVIDIA H100 80GB HBM3")
    fleet.gpus(late, ["GPU-l1"], since=T0 - timedelta(hours=30), model="Apple M2 Pro")
    conn.execute("UPDATE gpus SET virtualization_mode = 'vgpu' WHERE gpu_uuid = 'GPU-c2'")
    conn.execute("UPDATE gpus SET memory_total_bytes = 81559::bigint * 1048576 WHERE model = 'NVIDIA H100 80GB HBM3'")
    conn.execute("UPDATE gpus SET memory_total_bytes = 24564::bigint * 1048576 WHERE model = 'NVIDIA GeForce RTX 4090'")
    # We observed for 8 days but for a 3-hour upgrade two days ago.
    fleet.observing(T0 - timedelta(days=8), T0 - timedelta(days=2, hours=3))
    fleet.observing(T0 - timedelta(days=2), T0 + timedelta(minutes=5))
    rows = []
    for k in range(8 * 24 * 4):  # every 15 minutes (the slot grid is 15 s: sparse uptime, exact numbers)
        t = T0 - timedelta(days=8) + timedelta(minutes=15 * k, seconds=3)
        rows += [(steady, t, True), (flaky, t, k % 3 != 0), (cheat, t, True)]
        if t < T0 - timedelta(days=1):
            rows.append((gone, t, True))
        if t > T0 - timedelta(hours=30):
            rows.append((late, t, k % 2 == 0))
    for k in range(1, 20):  # and densely in the last five minutes
        rows += [(steady, T0 - timedelta(seconds=15 * k), True), (cheat, T0 - timedelta(seconds=15 * k), True)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO observations (time, node_id, ok, source, slot) VALUES (%s, %s, %s, 'push',"
                        " floor(extract(epoch FROM %s::timestamptz) / 15)::bigint)",
                        [(t, n, ok, t) for n, t, ok in rows])
    fleet.job("j1", steady, gpu_count=2, price="1.25", started_at=T0 - timedelta(days=3),
              ended_at=T0 - timedelta(days=2), status="succeeded")
    fleet.job("j2", steady, gpu_count=1, price="2.10", started_at=T0 - timedelta(hours=5))
    fleet.job("j3", flaky, gpu_count=1, price="0.333333", started_at=T0 - timedelta(days=40),
              ended_at=T0 - timedelta(days=10), status="failed")
    fleet.job("j4", flaky, gpu_count=2, price="0.7", started_at=T0 - timedelta(hours=20),
              ended_at=T0 - timedelta(hours=1), status="failed")
    fleet.job("j5", gone, gpu_count=1, price="0.5", started_at=T0 - timedelta(hours=2))  # hired while offline
    fleet.job("j6", cheat, gpu_count=2, price="3.99", started_at=T0 - timedelta(hours=1, seconds=7))
    run_checks(conn, at=T0 - timedelta(minutes=10))
    return [steady, flaky, gone, cheat, late]
