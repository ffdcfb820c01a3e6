"""A small simulated fleet with days of simulated history (collector/sim_history.py), for the tests."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from decimal import Decimal

import psycopg

from collector.sim_history import write_history
from exporters.simfleet import load_fleet, register_fleet

# 14 H100 hosts x 8 GPUs join part-way: 112 GPUs, above fleet_jump's 100-GPU floor.
SCENARIO = [
    {"profile": "healthy", "count": 8, "gpus": 4, "model": "NVIDIA A100-SXM4-80GB", "hired_fraction": 0.5},
    {"profile": "healthy", "count": 14, "gpus": 8, "model": "NVIDIA H100 80GB HBM3", "hired_fraction": 0.5},
    {"profile": "flapping", "count": 2, "gpus": 2, "model": "NVIDIA GeForce RTX 3090"},
    {"profile": "gpu_lost", "count": 1, "gpus": 4, "hired_fraction": 1.0},
]
INTERVAL_S = 60
PRICE = Decimal("1.25")


def write_small_history(conn, *, days: float = 2.0, end: datetime | None = None):
    """(fleet, node ids, History) for SCENARIO with ``days`` of history up to ``end`` (default now)."""
    fleet = load_fleet(7, SCENARIO)
    ids = register_fleet(conn, fleet, "http://127.0.0.1:9/", "history-test", interval_s=INTERVAL_S)
    history = write_history(conn, fleet, ids, end=end or datetime.now(timezone.utc), days=days,
                            interval_s=INTERVAL_S, price_of=lambda host: PRICE,
                            running_job_id=lambda n: f"demo-test-{n}")
    return fleet, ids, history


@contextlib.contextmanager
def app_with_history(pg_server, tmp_path_factory, *, days: float, checks: bool = False):
    """A database of its own with ``days`` of SCENARIO's history (and, with ``checks``, the integrity checks run
    at the current tick), and the dashboard app on it; yields (app, fleet, node ids, History)."""
    from dashboard.app import create_app
    from dashboard.service import Service
    from fleetscope.integrity import IntegritySettings, run_checks
    from fleetscope.snapshot import default_as_of

    name = pg_server.create_database(mode="plain")
    dsn = pg_server.dsn_for(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        fleet, ids, history = write_small_history(conn, days=days)
        if checks:
            run_checks(conn, at=default_as_of(), settings=IntegritySettings())
    service = Service(dsn, cache_dir=tmp_path_factory.mktemp("cache"))
    try:
        yield create_app(service), fleet, ids, history
    finally:
        service.close()
        pg_server.drop_database(name)
