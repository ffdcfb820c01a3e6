"""The demo's simulated history: labelled as simulated, and consistent with every definition that reads it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from fleetscope import accounting, rollups, simulated, slot_runs
from fleetscope.integrity import IntegritySettings, run_checks
from fleetscope.snapshot import fleet_counts, fleet_snapshot
from tests.historydata import write_small_history


@pytest.fixture
def history(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn, *write_small_history(conn)


def test_the_history_is_recorded_as_a_simulated_span_and_its_rows_carry_the_mark(history):
    conn, fleet, ids, h = history
    [span] = simulated.spans(conn)
    assert span.started_at == h.span.started_at and span.ended_at == h.span.ended_at
    assert span.nodes == len(ids) and "simulated" in span.note
    marks = conn.execute("SELECT DISTINCT collector_id FROM observations").fetchall()
    assert marks == [(span.collector_id,)]
    assert conn.execute("SELECT count(*) FROM observations").fetchone()[0] == h.observations
    assert conn.execute("SELECT DISTINCT collector_id FROM observing_periods").fetchall() == [(span.collector_id,)]
    finished = conn.execute("SELECT job_id FROM jobs WHERE status <> 'running'").fetchall()
    assert finished and all(job_id.startswith(span.job_prefix) for (job_id,) in finished)
    # Proofs of GPU are never simulated.
    assert conn.execute("SELECT count(*) FROM proof_challenges").fetchone()[0] == 0


def test_gpu_hours_and_revenue_of_the_snapshot_are_what_the_history_wrote(history):
    conn, fleet, ids, h = history
    total = accounting.accrual(conn, start="-infinity", end=h.span.ended_at)
    assert float(total.gpu_hours) == pytest.approx(h.gpu_hours, abs=1e-3)
    assert total.revenue_usd == pytest.approx(h.revenue_usd, abs=Decimal("0.01"))
    assert h.gpu_hours > 0
    snap = fleet_snapshot(conn, as_of=h.span.ended_at)
    assert snap.body["gpu_hours"]["total"] == pytest.approx(h.gpu_hours, abs=1e-3)
    assert snap.body["nodes"]["online"] > 0 and snap.body["gpus"]["hired"] > 0
    # Jobs run only while their node was seen online: the check holds over the history's last day.
    assert {c["name"]: c["ok"] for c in snap.body["checks"]}["hired_hours_within_online_hours"]


def test_the_jobs_still_running_at_the_end_are_the_hired_hosts_for_the_marketplace_to_carry_on(history):
    conn, fleet, ids, h = history
    hired = {ids[i] for i, host in enumerate(fleet.hosts) if host.hired}
    assert {job["node_id"] for job in h.running} == hired
    running = conn.execute("SELECT job_id FROM jobs WHERE status = 'running'").fetchall()
    assert sorted(j for (j,) in running) == sorted(job["job_id"] for job in h.running)


def test_the_rollup_and_slot_runs_it_fills_equal_their_own_refresh(history):
    conn, fleet, ids, h = history
    written = conn.execute("SELECT node_id, bucket, ok_slots, observations, failed FROM node_hourly_mat"
                           " ORDER BY 1, 2").fetchall()
    runs = conn.execute("SELECT node_id, interval_s, first_slot, last_slot FROM node_slot_runs ORDER BY 1, 3").fetchall()
    assert written and runs
    mark = conn.execute("SELECT watermark FROM rollup_watermarks WHERE name = 'node_hourly'").fetchone()[0]
    conn.execute("UPDATE rollup_watermarks SET watermark = NULL")
    conn.execute("DELETE FROM node_hourly_mat")
    rollups.refresh(conn, up_to=mark)
    assert conn.execute("SELECT node_id, bucket, ok_slots, observations, failed FROM node_hourly_mat"
                        " ORDER BY 1, 2").fetchall() == written
    conn.execute("DELETE FROM node_slot_runs")
    conn.execute("UPDATE node_slot_runs_watermark SET watermark = %s", (h.span.started_at - timedelta(minutes=1),))
    slot_runs.refresh(conn, up_to=h.span.ended_at)
    assert conn.execute("SELECT node_id, interval_s, first_slot, last_slot FROM node_slot_runs"
                        " ORDER BY 1, 3").fetchall() == runs


def test_the_recorded_fleet_counts_are_the_snapshots_counts_and_show_the_jump(history):
    conn, fleet, ids, h = history
    points = conn.execute("SELECT at, registered, online FROM fleet_gpu_counts ORDER BY at").fetchall()
    for at, registered, online in points[::25]:
        gpus = fleet_counts(conn, at=at)["gpus"]
        assert (registered, online) == (gpus["registered"], gpus["online"]), at
    ran = run_checks(conn, at=h.span.ended_at, settings=IntegritySettings())
    assert ran["fleet_jump"].opened >= 1
    jumps = conn.execute("SELECT (evidence ->> 'at')::timestamptz, evidence ->> 'metric' FROM integrity_findings"
                         " WHERE kind = 'fleet_jump'").fetchall()
    assert {metric for _, metric in jumps} == {"registered", "online"}
    # The event is where the H100 hosts joined (the counts are every 15 minutes).
    assert all(h.jump_at <= at <= h.jump_at + timedelta(minutes=30) for at, _ in jumps)


def test_nothing_is_written_for_a_fleet_that_already_has_observations(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        write_small_history(conn, days=1)
        fleet, ids, again = write_small_history(conn, days=1)
        assert again is None
        assert len(simulated.spans(conn)) == 1
