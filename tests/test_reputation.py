"""Reputation v1: 100 x V x (0.5 U7 + 0.3 U1 + 0.2 J), every input shown."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleetscope.reputation import (FORMULA_VERSION, job_success_ratio, node_reputation, reputation_score,
                                   verification_factor)
from tests.fleetdata import T0, Fleet, at


def test_job_success_ratio_has_a_beta_1_1_prior():
    assert job_success_ratio(succeeded=0, finished=0) == 0.5
    assert job_success_ratio(succeeded=8, finished=8) == 0.9
    assert job_success_ratio(succeeded=0, finished=8) == 0.1
    with pytest.raises(ValueError):
        job_success_ratio(succeeded=3, finished=2)


def test_verification_factor_is_zero_when_any_gpu_is_flagged():
    assert verification_factor(verified=8, unverified=0, flagged=0) == 1.0
    assert verification_factor(verified=7, unverified=1, flagged=0) == 0.5
    assert verification_factor(verified=7, unverified=0, flagged=1) == 0.0
    assert verification_factor(verified=0, unverified=0, flagged=0) == 0.5


def test_score_weights_uptime_7d_uptime_24h_and_jobs():
    assert reputation_score(u7=1.0, u1=1.0, j=1.0, v=1.0) == 100.0
    assert reputation_score(u7=0.9, u1=0.5, j=0.75, v=1.0) == 75.0
    assert reputation_score(u7=0.9, u1=0.5, j=0.75, v=0.5) == 37.5
    assert reputation_score(u7=None, u1=None, j=0.5, v=1.0) == 10.0


def _healthy_node(fleet: Fleet, *, checked: bool) -> int:
    node = fleet.node(interval_s=60, registered_at=T0 - timedelta(days=10))
    fleet.observing(T0 - timedelta(days=8), T0 + timedelta(hours=1))
    fleet.gpus(node, ["GPU-a", "GPU-b"], checked=checked, since=T0 - timedelta(days=10))
    # First reported 9 days ago (uptime counts from there: the whole week is
    # judged), then seen in every slot of the last 24 h and in the first half
    # of each earlier day of the week: U1 = 1, U7 = (1440 + 6 x 720) / 10080.
    fleet.observe(node, T0 - timedelta(days=9))
    for minute in range(0, 7 * 1440):
        t = T0 - timedelta(minutes=minute + 1) + timedelta(seconds=5)
        if minute < 1440 or (minute % 1440) < 720:
            fleet.observe(node, t)
    return node


def test_a_healthy_verified_node_scores_from_its_uptime_and_jobs(conn):
    fleet = Fleet(conn)
    node = _healthy_node(fleet, checked=True)
    for i in range(3):
        fleet.job(f"ok-{i}", node, gpu_count=1, price="1.00", started_at=at(-7200), ended_at=at(-3600))
    fleet.job("bad", node, gpu_count=1, price="1.00", started_at=at(-7200), ended_at=at(-3600), status="failed")
    fleet.job("old", node, gpu_count=1, price="1.00", started_at=T0 - timedelta(days=40),
              ended_at=T0 - timedelta(days=31), status="failed")
    rep = node_reputation(conn, node, at=T0)
    u7 = (1440 + 6 * 720) / 10080
    assert rep.u1 == 1.0 and rep.u7 == pytest.approx(u7)
    assert (rep.jobs_succeeded, rep.jobs_finished, rep.j) == (3, 4, 4 / 6)
    assert (rep.gpus_verified, rep.gpus_unverified, rep.gpus_flagged, rep.v) == (2, 0, 0, 1.0)
    assert rep.score == round(100 * (0.5 * u7 + 0.3 * 1.0 + 0.2 * 4 / 6), 2)
    shown = rep.as_dict()
    assert shown["formula_version"] == FORMULA_VERSION
    assert shown["inputs"]["uptime_24h_slots"] == {"window_slots": 1440, "observed_slots": 1440, "ok_slots": 1440}


def test_a_node_with_a_flagged_gpu_drops_to_zero_and_says_why(conn):
    fleet = Fleet(conn)
    node = _healthy_node(fleet, checked=True)
    fleet.finding("virtualized", node_id=node, gpu_uuid="GPU-b", first_seen=at(-600))
    rep = node_reputation(conn, node, at=T0)
    assert rep.score == 0.0
    assert (rep.gpus_verified, rep.gpus_flagged, rep.v) == (1, 1, 0.0)
    assert rep.as_dict()["inputs"]["gpus_flagged"] == 1
    # Before the finding was opened the same node scored normally.
    assert node_reputation(conn, node, at=at(-900)).score > 0


def test_a_node_level_finding_flags_all_its_gpus(conn):
    fleet = Fleet(conn)
    node = _healthy_node(fleet, checked=False)
    assert node_reputation(conn, node, at=T0).v == 0.5
    fleet.finding("identity_change", node_id=node, first_seen=at(-60))
    rep = node_reputation(conn, node, at=T0)
    assert (rep.gpus_verified, rep.gpus_unverified, rep.gpus_flagged) == (0, 0, 2)


def test_an_unknown_node_has_no_reputation(conn):
    assert node_reputation(conn, 999_999, at=T0) is None
