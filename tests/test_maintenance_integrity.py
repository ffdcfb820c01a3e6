"""The maintenance loop runs the integrity checks on fresh data and publishes the due snapshot."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg

from collector.maintenance import Maintenance, run_once
from fleetscope.integrity import IntegritySettings
from fleetscope.chain import list_published
from fleetscope.verify import verify
from tests.fleetdata import T0
from tests.publishdata import week_fleet


def test_one_round_records_the_counts_runs_the_checks_and_publishes_the_due_hour(dsn, open_tmp):
    with psycopg.connect(dsn, autocommit=True) as conn:
        week_fleet(conn)
        conn.execute("DELETE FROM integrity_findings")
    now = T0 + timedelta(minutes=1)
    done = run_once(dsn, now=now, checks=IntegritySettings(), bundle_dir=open_tmp, publish_period=timedelta(hours=1))
    assert done["integrity"] == {"virtualized": (1, 0)}  # (opened, resolved)
    assert done["published"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        counts = conn.execute("SELECT at, registered FROM fleet_gpu_counts").fetchall()
        assert len(counts) == 1 and counts[0][0] <= now
        listed = list_published(conn)
        assert [r["as_of"] for r in listed] == ["2026-11-24T12:00:00Z"]
    assert verify(open_tmp / listed[0]["bundle"]).ok
    again = run_once(dsn, now=now + timedelta(minutes=1), checks=IntegritySettings(), bundle_dir=open_tmp,
                     publish_period=timedelta(hours=1))
    assert "published" not in again and again["integrity"] == {}


async def test_the_loop_publishes_as_often_as_it_is_configured(dsn, open_tmp):
    with psycopg.connect(dsn, autocommit=True) as conn:
        week_fleet(conn)
    async with Maintenance(dsn, interval_s=0.2, integrity_interval_s=60, publish_interval_s=60, bundle_dir=open_tmp):
        for _ in range(100):
            await asyncio.sleep(0.1)
            with psycopg.connect(dsn, autocommit=True) as conn:
                if list_published(conn):
                    break
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert len(list_published(conn)) == 1
        assert conn.execute("SELECT count(*) FROM fleet_gpu_counts").fetchone()[0] >= 1
