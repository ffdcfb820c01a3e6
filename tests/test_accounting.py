"""GPU-hours and accrued revenue: jobs overlapping the window's edges."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from fleetscope.accounting import accrual, job_accrual
from fleetscope.snapshot import fleet_snapshot
from tests.fleetdata import T0, Fleet

H = timedelta(hours=1)


def build_ledger(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.gpus(node, [f"GPU-{i}" for i in range(8)])
    # A: 2 GPUs from T0-30h to T0-20h at 2.00: 4 h inside the last 24 h.
    fleet.job("A", node, gpu_count=2, price="2.00", started_at=T0 - 30 * H, ended_at=T0 - 20 * H)
    # B: 1 GPU running since T0-1.5h at 1.50.
    fleet.job("B", node, gpu_count=1, price="1.50", started_at=T0 - 1.5 * H)
    # C: starts after T0: nothing yet.
    fleet.job("C", node, gpu_count=4, price="3.00", started_at=T0 + H)
    # D: 3 GPUs ended exactly at T0-24h: outside the last 24 h, inside the total.
    fleet.job("D", node, gpu_count=3, price="0.40", started_at=T0 - 26 * H, ended_at=T0 - 24 * H, status="failed")
    return node


def test_jobs_overlapping_the_window_edge_give_exact_gpu_hours_and_revenue(conn):
    build_ledger(conn)
    day = accrual(conn, start=T0 - 24 * H, end=T0)
    assert day.gpu_hours == Decimal("9.500000")       # 2 x 4 h + 1 x 1.5 h
    assert day.revenue_usd == Decimal("18.250000")    # 8 x 2.00 + 1.5 x 1.50
    total = accrual(conn, start="-infinity", end=T0)
    assert total.gpu_hours == Decimal("27.500000")    # 2 x 10 + 1.5 + 3 x 2
    assert total.revenue_usd == Decimal("44.650000")  # 40 + 2.25 + 2.40


def test_the_snapshot_shows_the_same_gpu_hours_and_revenue(conn):
    build_ledger(conn)
    body = fleet_snapshot(conn, as_of=T0).body
    assert body["gpu_hours"] == {"last_24h": 9.5, "total": 27.5}
    assert body["revenue_usd"] == {"last_24h": 18.25, "total": 44.65}


def test_the_python_twin_agrees_with_the_sql(conn):
    build_ledger(conn)
    rows = conn.execute("SELECT gpu_count, price_per_gpu_hour, started_at, ended_at FROM jobs").fetchall()
    hours = sum((job_accrual(gpu_count=r[0], price_per_gpu_hour=r[1], started_at=r[2], ended_at=r[3],
                             start=T0 - 24 * H, end=T0).gpu_hours for r in rows), Decimal(0))
    assert round(hours, 6) == accrual(conn, start=T0 - 24 * H, end=T0).gpu_hours
