"""Properties of the snapshot on random fleets, against an independent Python oracle.

The oracle restates DESIGN.md's definitions in plain Python over the same
rows; hypothesis generates fleets with duplicated UUIDs, lost GPUs, failed
observations, overlapping jobs and findings, and the snapshot must agree with
the oracle on every count and keep its invariants.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetscope.snapshot import fleet_snapshot
from tests.fleetdata import T0, Fleet

UUIDS = [f"GPU-{c}" for c in "abcdefghij"]
MODELS = ["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"]

node_st = st.fixed_dictionaries({
    "grace_s": st.sampled_from([15, 45, 120]),
    "observations": st.lists(st.tuples(st.integers(-600, 60), st.booleans()), max_size=6,
                             unique_by=lambda o: o[0]),
    "healthy": st.lists(st.sampled_from(UUIDS), max_size=4, unique=True),
    "lost": st.lists(st.sampled_from(UUIDS), max_size=2, unique=True),
    "model": st.sampled_from(MODELS),
    "mixed": st.booleans(),  # its GPUs cycle through the models instead
    "checked": st.booleans(),
    "jobs": st.lists(st.tuples(st.integers(1, 5), st.integers(-7200, 600), st.one_of(st.none(), st.integers(-3600, 3600))),
                     max_size=3),
    "node_finding": st.booleans(),
})
fleet_st = st.fixed_dictionaries({
    "nodes": st.lists(node_st, min_size=1, max_size=5),
    "gpu_findings": st.lists(st.sampled_from(UUIDS), max_size=2, unique=True),
})


def oracle(fleet: dict, node_ids: list[int]) -> dict:
    """The GPU and node counts at T0, by the definitions, in plain Python."""
    claims = {}  # uuid -> list of (online, covered, model, node_index)
    nodes_online = 0
    for index, node in enumerate(fleet["nodes"]):
        oks = [s for s, ok in node["observations"] if ok and s <= 0]
        last_ok = max(oks) if oks else None
        online = last_ok is not None and last_ok > -node["grace_s"]
        nodes_online += online
        hired = sum(n for n, start, end in node["jobs"]
                    if start <= 0 and (end is None or start + abs(end) > 0))
        lost = [u for u in node["lost"] if u not in node["healthy"]]
        gpus = [(online and u in node["healthy"] and last_ok is not None, u) for u in node["healthy"] + lost]
        ranked = sorted(gpus, key=lambda g: (not g[0], g[1]))
        models = model_of(node)
        for rank, (gpu_online, gpu_uuid) in enumerate(ranked):
            claims.setdefault(gpu_uuid, []).append((gpu_online, rank < hired, models[gpu_uuid], index))
    counts = dict.fromkeys(("registered", "online", "offline", "hired", "hired_offline", "idle",
                            "verified", "unverified", "flagged"), 0)
    by_model: dict[str, dict] = {}
    for gpu_uuid, cs in claims.items():
        online = any(c[0] for c in cs)
        hired = any(c[0] and c[1] for c in cs)
        flagged = gpu_uuid in fleet["gpu_findings"] or any(fleet["nodes"][c[3]]["node_finding"] for c in cs)
        checked = any(fleet["nodes"][c[3]]["checked"] for c in cs)
        counts["registered"] += 1
        counts["online" if online else "offline"] += 1
        counts["hired"] += hired
        counts["idle"] += online and not hired
        counts["hired_offline"] += not online and any(c[1] for c in cs)
        counts["flagged" if flagged else "verified" if checked else "unverified"] += 1
        model = min(c[2] for c in cs)  # the least model name in byte order
        m = by_model.setdefault(model, {"model": model, "registered": 0, "online": 0, "hired": 0})
        m["registered"] += 1
        m["online"] += online
        m["hired"] += hired
    n = len(fleet["nodes"])
    return {"gpus": counts, "nodes": {"registered": n, "online": nodes_online, "offline": n - nodes_online},
            "by_model": [by_model[k] for k in sorted(by_model)]}


def model_of(node: dict) -> dict[str, str]:
    uuids = node["healthy"] + [u for u in node["lost"] if u not in node["healthy"]]
    if node["mixed"]:
        return {u: MODELS[i % len(MODELS)] for i, u in enumerate(uuids)}
    return dict.fromkeys(uuids, node["model"])


def load(conn: psycopg.Connection, fleet: dict) -> list[int]:
    conn.execute("TRUNCATE operators, nodes, gpus, node_gpu_sets, jobs, integrity_findings, observations CASCADE")
    builder = Fleet(conn)
    ids = []
    for index, node in enumerate(fleet["nodes"]):
        node_id = builder.node(grace_s=node["grace_s"])
        ids.append(node_id)
        for seconds, ok in node["observations"]:
            builder.observe(node_id, T0 + timedelta(seconds=seconds), ok=ok)
        lost = [u for u in node["lost"] if u not in node["healthy"]]
        builder.gpus(node_id, node["healthy"], lost=lost, models=model_of(node), checked=node["checked"])
        for j, (count, start, end) in enumerate(node["jobs"]):
            started = T0 + timedelta(seconds=start)
            ended = None if end is None else started + timedelta(seconds=abs(end))
            builder.job(f"job-{index}-{j}", node_id, gpu_count=count, price="1.00", started_at=started,
                        ended_at=ended)
        if node["node_finding"]:
            builder.finding("identity_change", node_id=node_id)
    for gpu_uuid in fleet["gpu_findings"]:
        builder.finding("duplicate_uuid", gpu_uuid=gpu_uuid)
    return ids


@pytest.fixture
def shared_conn(any_mode_dsn):
    # One database for all examples of a property (hypothesis re-runs the
    # body many times; a database per example would take minutes).
    with psycopg.connect(any_mode_dsn, autocommit=True) as connection:
        yield connection


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleet=fleet_st)
def test_the_snapshot_agrees_with_the_definitions_on_random_fleets(shared_conn, fleet):
    ids = load(shared_conn, fleet)
    snap = fleet_snapshot(shared_conn, as_of=T0)
    expected = oracle(fleet, ids)
    assert snap.body["gpus"] == expected["gpus"]
    assert snap.body["nodes"] == expected["nodes"]
    assert snap.body["by_model"] == expected["by_model"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleet=fleet_st)
def test_the_snapshot_invariants_hold_on_random_fleets(shared_conn, fleet):
    load(shared_conn, fleet)
    snap = fleet_snapshot(shared_conn, as_of=T0)
    body, checks = snap.body, {c["name"]: c for c in snap.body["checks"]}
    assert checks["state_partition"]["ok"], checks["state_partition"]["detail"]
    assert checks["models_sum_to_total"]["ok"], checks["models_sum_to_total"]["detail"]
    assert checks["no_hired_offline"]["ok"] == (body["gpus"]["hired_offline"] == 0)
    assert body["gpus"]["hired"] <= body["gpus"]["online"]
    distinct = shared_conn.execute("SELECT count(DISTINCT gpu_uuid) FROM gpus").fetchone()[0]
    assert body["gpus"]["registered"] == distinct
    assert fleet_snapshot(shared_conn, as_of=T0).canonical == snap.canonical


@pytest.fixture
def worker_conns(any_mode_dsn):
    conns = [psycopg.connect(any_mode_dsn, autocommit=True) for _ in range(3)]
    yield conns
    for c in conns:
        c.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleet=fleet_st)
def test_the_parallel_snapshot_is_byte_identical_to_the_sequential_one(shared_conn, worker_conns, fleet):
    load(shared_conn, fleet)
    sequential = fleet_snapshot(shared_conn, as_of=T0)
    for n in (1, 2, 3):
        assert fleet_snapshot(shared_conn, as_of=T0, workers=worker_conns[:n]).canonical == sequential.canonical
