"""/api/v1/fleet is the fleet snapshot, and the node and GPU tables add up to it."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from fleetscope.snapshot import snapshot_from_dsn
from tests.dashboard_harness import get


def _as_of(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_fleet_endpoint_returns_the_snapshot_the_cli_computes(dsn, explorer_url):
    status, body, headers = get(f"{explorer_url}/api/v1/fleet")
    assert status == 200
    cli = snapshot_from_dsn(dsn, as_of=_as_of(body["as_of"]))
    assert body == cli.as_dict()
    assert headers["X-Snapshot-SHA256"] == body["snapshot_sha256"] == cli.sha256
    assert body["nodes"] == {"registered": 6, "online": 5, "offline": 1}
    # alpha 4 (3 hired), bravo 2, charlie 2 offline (1 hired: hired_offline),
    # delta 1 (flagged), echo and foxtrot share a UUID: 3 GPUs, not 4.
    assert body["gpus"]["registered"] == 12
    assert (body["gpus"]["hired"], body["gpus"]["hired_offline"], body["gpus"]["flagged"]) == (3, 1, 1)


def test_the_node_and_gpu_tables_add_up_to_the_snapshot(explorer_url):
    for _ in range(4):  # three reads within one 15 s tick (a new tick is a new snapshot, rightly)
        _, fleet, _ = get(f"{explorer_url}/api/v1/fleet")
        _, nodes, _ = get(f"{explorer_url}/api/v1/nodes?limit=1000")
        _, gpus, _ = get(f"{explorer_url}/api/v1/gpus?limit=1000")
        if get(f"{explorer_url}/api/v1/fleet")[1]["as_of"] == fleet["as_of"]:
            break
    assert nodes["snapshot_sha256"] == gpus["snapshot_sha256"] == fleet["snapshot_sha256"]
    assert nodes["total"] == fleet["nodes"]["registered"]
    assert sum(n["online"] for n in nodes["items"]) == fleet["nodes"]["online"]
    # The GPU table has one row per claim; by distinct UUID (the snapshot's
    # rule: online if any claim is) the states are the headline counts.
    by_uuid: dict[str, set[str]] = {}
    for gpu in gpus["items"]:
        by_uuid.setdefault(gpu["gpu_uuid"], set()).add(gpu["state"])
    assert len(by_uuid) == fleet["gpus"]["registered"]
    states = Counter(next(s for s in ("hired", "idle", "hired_offline", "offline") if s in claims)
                     for claims in by_uuid.values())
    for state in ("hired", "idle", "hired_offline"):
        assert states[state] == fleet["gpus"][state], state
    assert states["hired"] + states["idle"] == fleet["gpus"]["online"]
    assert sum(1 for g in gpus["items"] if g["verification"] == "flagged") == fleet["gpus"]["flagged"]


def test_the_history_ends_at_the_snapshot_and_the_daily_totals_match_it(explorer_url):
    _, fleet, _ = get(f"{explorer_url}/api/v1/fleet")
    _, history, _ = get(f"{explorer_url}/api/v1/fleet/history")
    _, daily, _ = get(f"{explorer_url}/api/v1/fleet/daily")
    if history["as_of"] != fleet["as_of"]:  # a tick turned between the requests
        _, fleet, _ = get(f"{explorer_url}/api/v1/fleet")
    last = history["points"][-1]
    assert last["as_of"] == history["as_of"]
    assert last["gpus"] == fleet["gpus"] and last["nodes"] == fleet["nodes"]
    assert len(history["points"]) >= 96
    assert len(daily["days"]) == 30 and daily["days"][-1]["partial"]
    # Everything in this fleet happened within two days.
    assert round(sum(d["gpu_hours"] for d in daily["days"]), 4) == round(fleet["gpu_hours"]["total"], 4)
