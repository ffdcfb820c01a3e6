"""/api/v1/nodes/{id}: state, GPUs, uptime, reputation with its inputs, findings; unknown ids are a 404."""

from __future__ import annotations

from datetime import datetime

import psycopg
import pytest

from fleetscope.reputation import FORMULA_VERSION, node_reputation
from tests.dashboard_harness import get


def test_a_node_shows_its_state_gpus_uptime_reputation_and_findings(dsn, explorer_url, live_fleet):
    node_id = live_fleet["delta"]
    status, node, _ = get(f"{explorer_url}/api/v1/nodes/{node_id}")
    assert status == 200
    # Seen every 30 minutes with an hour of grace: late, still online.
    assert node["name"] == "delta" and node["state"]["status"] == "late" and node["state"]["online"]
    assert [(g["gpu_uuid"], g["state"], g["verification"]) for g in node["gpus"]] == [("GPU-d0", "idle", "flagged")]
    rep = node["reputation"]
    assert rep["formula_version"] == FORMULA_VERSION
    assert rep["score"] == 0.0 and rep["inputs"]["V"] == 0.0 and rep["inputs"]["gpus_flagged"] == 1
    at = datetime.fromisoformat(node["as_of"].replace("Z", "+00:00"))
    with psycopg.connect(dsn) as conn:
        direct = node_reputation(conn, node_id, at=at)
    assert node["uptime_24h"]["ratio"] == direct.u1 and node["uptime_7d"]["ratio"] == direct.u7
    assert [f["kind"] for f in node["findings"]["items"]] == ["virtualized"]


def test_a_node_with_finished_jobs_has_them_in_its_reputation(explorer_url, live_fleet):
    _, node, _ = get(f"{explorer_url}/api/v1/nodes/{live_fleet['bravo']}")
    inputs = node["reputation"]["inputs"]
    assert (inputs["jobs_succeeded_30d"], inputs["jobs_finished_30d"]) == (1, 2)
    assert inputs["J"] == 0.5 and inputs["V"] == 1.0


@pytest.mark.parametrize("node_id", ["999999", "abc", "1e3", "-1", "99999999999999999999999"])
def test_an_unknown_node_is_a_404_in_json_and_as_a_page(explorer_url, node_id):
    status, body, _ = get(f"{explorer_url}/api/v1/nodes/{node_id}")
    assert status == 404 and body["error"] == "not_found"
    status, _, headers = get(f"{explorer_url}/nodes/{node_id}")
    assert status == 404 and headers["Content-Type"].startswith("text/html")


def test_pages_answer_200_and_unknown_paths_404(explorer_url, live_fleet):
    for path in ("/", "/nodes", f"/nodes/{live_fleet['alpha']}", "/integrity", "/methodology"):
        assert get(f"{explorer_url}{path}")[0] == 200, path
    assert get(f"{explorer_url}/no-such-page")[0] == 404
    assert get(f"{explorer_url}/api/v1/no-such-thing")[0] == 404


def test_the_integrity_endpoint_lists_findings_with_the_snapshot_counts(explorer_url):
    status, body, _ = get(f"{explorer_url}/api/v1/integrity")
    assert status == 200
    assert body["open_findings"] == 1 and body["by_kind"] == {"virtualized": 1}
    assert body["gpus"]["flagged"] == 1
    assert [(f["kind"], f["open"]) for f in body["items"]] == [("virtualized", True), ("duplicate_uuid", False)]
    _, only_open, _ = get(f"{explorer_url}/api/v1/integrity?open=true")
    assert [f["kind"] for f in only_open["items"]] == ["virtualized"]
    _, by_kind, _ = get(f"{explorer_url}/api/v1/integrity?kind=duplicate_uuid")
    assert by_kind["total"] == 1 and by_kind["items"][0]["resolved_at"] is not None
    status, bad, _ = get(f"{explorer_url}/api/v1/integrity?kind=aliens")
    assert status == 400 and "kind must be one of" in bad["reason"]


def test_node_history_and_telemetry_are_served(explorer_url, live_fleet):
    status, history, _ = get(f"{explorer_url}/api/v1/nodes/{live_fleet['alpha']}/history")
    assert status == 200 and sum(h["ok_slots"] for h in history["hours"]) == 48
    status, telemetry, _ = get(f"{explorer_url}/api/v1/nodes/{live_fleet['alpha']}/telemetry")
    assert status == 200 and telemetry["gpus"] == {}
    assert get(f"{explorer_url}/api/v1/nodes/424242/history")[0] == 404


def test_the_methodology_is_served_from_the_code(explorer_url):
    from fleetscope import reputation

    status, definitions, _ = get(f"{explorer_url}/api/v1/methodology")
    assert status == 200
    rep = next(d for d in definitions if d["id"] == "reputation")
    assert rep["version"] == reputation.FORMULA_VERSION and rep["formula"] == reputation.FORMULA
    assert any("def reputation_score" in c["source"] for c in rep["code"])
