"""The fleet snapshot: states by GPU, distinct UUIDs, checks, and a stable hash."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from fleetscope.snapshot import canonical_json, default_as_of, fleet_snapshot
from tests.fleetdata import T0, Fleet, at

H = timedelta(hours=1)


def check(snapshot, name):
    return next(c for c in snapshot.body["checks"] if c["name"] == name)


def test_a_hired_gpu_on_an_offline_node_is_hired_offline_and_fails_the_check(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.gpus(node, ["GPU-a", "GPU-b"])
    fleet.observe(node, at(-600))  # last seen ten minutes ago: offline
    fleet.job("j1", node, gpu_count=1, price="2.00", started_at=T0 - 2 * H)
    snap = fleet_snapshot(conn, as_of=T0)
    gpus = snap.body["gpus"]
    assert (gpus["online"], gpus["offline"], gpus["hired"], gpus["hired_offline"]) == (0, 2, 0, 1)
    assert check(snap, "no_hired_offline") == {
        "name": "no_hired_offline", "ok": False, "detail": "1 GPUs are covered by a running job while offline"}
    assert check(snap, "state_partition")["ok"] is True


def test_online_gpus_are_hired_or_idle_by_the_running_jobs(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.gpus(node, ["GPU-a", "GPU-b", "GPU-c"], lost=["GPU-d"])
    fleet.observe(node, at(-5))
    fleet.job("j1", node, gpu_count=2, price="1.00", started_at=T0 - H)
    fleet.job("old", node, gpu_count=1, price="1.00", started_at=T0 - 3 * H, ended_at=T0 - 2 * H)
    body = fleet_snapshot(conn, as_of=T0).body
    assert body["nodes"] == {"registered": 1, "online": 1, "offline": 0}
    assert {k: body["gpus"][k] for k in ("registered", "online", "offline", "hired", "idle", "hired_offline")} == {
        "registered": 4, "online": 3, "offline": 1, "hired": 2, "idle": 1, "hired_offline": 0}


def test_a_uuid_claimed_by_two_nodes_is_one_gpu(conn):
    fleet = Fleet(conn)
    a, b = fleet.node(), fleet.node()
    fleet.gpus(a, ["GPU-same", "GPU-a2"])
    fleet.gpus(b, ["GPU-same"])
    fleet.observe(a, at(-5))
    fleet.observe(b, at(-5))
    body = fleet_snapshot(conn, as_of=T0).body
    assert body["gpus"]["registered"] == 2
    assert body["gpus"]["online"] == 2
    assert body["by_model"] == [{"model": "NVIDIA A100-SXM4-80GB", "registered": 2, "online": 2, "hired": 0}]


def test_gpus_are_verified_unverified_or_flagged(conn):
    fleet = Fleet(conn)
    a, b = fleet.node(), fleet.node()
    fleet.gpus(a, ["GPU-1", "GPU-2"], checked=True)
    fleet.gpus(b, ["GPU-3", "GPU-4", "GPU-5"])
    fleet.finding("virtualized", node_id=a, gpu_uuid="GPU-2")
    fleet.finding("identity_change", node_id=b)                              # flags all of b's GPUs
    fleet.finding("spec_mismatch", gpu_uuid="GPU-1", resolved_at=T0 - H)     # resolved: no longer flags
    fleet.finding("duplicate_uuid", gpu_uuid="GPU-1", first_seen=T0 + H)     # not yet seen at T0
    body = fleet_snapshot(conn, as_of=T0).body
    assert {k: body["gpus"][k] for k in ("verified", "unverified", "flagged")} == {
        "verified": 1, "unverified": 0, "flagged": 4}
    assert body["integrity"] == {"open_findings": 2, "by_kind": {"identity_change": 1, "virtualized": 1}}


def test_counts_by_model_sum_to_the_totals(conn):
    fleet = Fleet(conn)
    a, b = fleet.node(), fleet.node()
    fleet.gpus(a, ["GPU-1", "GPU-2"], model="NVIDIA GeForce RTX 4090")
    fleet.gpus(b, ["GPU-3"], model="NVIDIA H100 80GB HBM3")
    fleet.observe(a, at(-1))
    fleet.job("j", a, gpu_count=1, price="0.40", started_at=T0 - H)
    snap = fleet_snapshot(conn, as_of=T0)
    assert snap.body["by_model"] == [
        {"model": "NVIDIA GeForce RTX 4090", "registered": 2, "online": 2, "hired": 1},
        {"model": "NVIDIA H100 80GB HBM3", "registered": 1, "online": 0, "hired": 0},
    ]
    assert check(snap, "models_sum_to_total")["ok"] is True


def test_the_snapshot_is_byte_identical_when_computed_twice_on_unchanged_data(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.gpus(node, ["GPU-1", "GPU-2"])
    fleet.observe(node, at(-3))
    fleet.job("j", node, gpu_count=2, price="1.10", started_at=T0 - 5 * H)
    first, second = fleet_snapshot(conn, as_of=T0), fleet_snapshot(conn, as_of=T0)
    assert first.canonical == second.canonical
    assert first.sha256 == second.sha256 == hashlib.sha256(first.canonical).hexdigest()
    assert canonical_json(json.loads(first.canonical)) == first.canonical
    fleet.observe(node, at(-1))  # changes no number: the same hash
    assert fleet_snapshot(conn, as_of=T0).sha256 == first.sha256
    fleet.observe(fleet.node(), at(-1))  # one more node online: a new hash
    assert fleet_snapshot(conn, as_of=T0).sha256 != first.sha256


def test_the_shown_object_carries_its_hash_and_as_of(conn):
    snap = fleet_snapshot(conn, as_of=at(7.5))
    shown = snap.as_dict()
    assert shown["as_of"] == "2026-11-24T12:00:07.500000Z"
    assert shown["snapshot_sha256"] == snap.sha256
    assert set(shown) >= {"as_of", "snapshot_sha256", "nodes", "gpus", "by_model", "gpu_hours", "revenue_usd",
                          "checks"}


def test_the_default_as_of_is_the_latest_tick_that_has_settled():
    assert default_as_of(at(34.9)) == at(15)   # tick 12:00:30 settles at 12:00:35
    assert default_as_of(at(35)) == at(30)


def test_selling_more_gpu_hours_than_online_fails_the_check(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.gpus(node, ["GPU-1"])
    # Online for 10 minutes (40 slots of 15 s) in the window, hired for 5 hours.
    for i in range(40):
        fleet.observe(node, T0 - 3 * H + timedelta(seconds=15 * i))
    fleet.job("j", node, gpu_count=1, price="1.00", started_at=T0 - 6 * H, ended_at=T0 - H)
    snap = fleet_snapshot(conn, as_of=T0)
    result = check(snap, "hired_hours_within_online_hours")
    assert result["ok"] is False
    assert f"node {node} hired 5.000000 > online 0.166667 GPU-h" in result["detail"]


def test_an_implied_price_outside_the_bounds_fails_the_check(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.job("j", node, gpu_count=1, price="500.00", started_at=T0 - 2 * H, ended_at=T0 - H)
    result = check(fleet_snapshot(conn, as_of=T0), "implied_price_within_bounds")
    assert result["ok"] is False and "500.0000 USD/GPU-h" in result["detail"]
