"""Proofs of GPU in the JSON API: each GPU's latest verdict on its node, every verdict by node and verdict, paged.

The live fleet (tests/dashboard_harness.py) passed a proof on every GPU of
alpha, bravo, delta, echo and foxtrot an hour ago; ``proof_fleet`` adds a
failure on bravo's GPU-b1 (with its proof_failed finding), a no answer on
echo's GPU-e0 and a second pass on alpha's GPU-a3. charlie was never challenged.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest

from fleetscope import proof
from tests.dashboard_harness import PROOF_FAILED_REASON, get, proof_fleet  # noqa: F401

# Passes an hour ago: 4 (alpha) + 2 (bravo) + 1 (delta) + 2 (echo) + 2 (foxtrot); then 1 failed, 1 no answer, 1 pass.
PROOFS = 11 + 3


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_node_shows_each_gpus_latest_proof_passed_and_failed(explorer_url, proof_fleet):
    status, node, _ = get(f"{explorer_url}/api/v1/nodes/{proof_fleet['bravo']}")
    assert status == 200
    proofs = node["proofs"]
    assert sorted(proofs) == ["GPU-b0", "GPU-b1"]
    passed, failed = proofs["GPU-b0"], proofs["GPU-b1"]
    assert passed["verdict"] == "passed" and passed["reason"] is None
    assert passed["seconds"] == 2.75 and passed["tflops"] == pytest.approx(2 * passed["n"] ** 2 * passed["k"] / 2.75e12)
    assert passed["model"] == "NVIDIA GeForce RTX 4090" and isinstance(passed["round_id"], int)
    assert _time(passed["valid_until"]) == _time(passed["decided_at"]) + proof.VERIFIED_FOR
    assert failed["verdict"] == "failed" and failed["reason"] == PROOF_FAILED_REASON
    assert failed["valid_until"] is None and failed["round_id"] > passed["round_id"]
    assert _time(failed["decided_at"]) > _time(passed["decided_at"])
    # The failure flags the GPU: its finding is among the node's, and V drops to 0.
    assert {g["gpu_uuid"]: g["verification"] for g in node["gpus"]} == {"GPU-b0": "verified", "GPU-b1": "flagged"}
    assert [(f["kind"], f["gpu_uuid"], f["open"]) for f in node["findings"]["items"]] == [
        ("proof_failed", "GPU-b1", True)]
    assert node["findings"]["items"][0]["evidence"]["reason"] == PROOF_FAILED_REASON
    assert node["reputation"]["inputs"]["V"] == 0.0
    # What was there before is unchanged.
    assert set(node) >= {"as_of", "snapshot_sha256", "node_id", "name", "operator", "registered_at", "interval_s",
                         "grace_s", "paused", "state", "gpus", "uptime_24h", "uptime_7d", "reputation", "findings"}


def test_the_latest_proof_is_the_newest_whatever_its_verdict(explorer_url, proof_fleet):
    _, echo, _ = get(f"{explorer_url}/api/v1/nodes/{proof_fleet['echo']}")
    assert echo["proofs"]["GPU-e0"]["verdict"] == "no_answer"
    assert echo["proofs"]["GPU-e0"]["seconds"] is None and echo["proofs"]["GPU-e0"]["tflops"] is None
    # A no answer flags nothing: the pass an hour ago still makes it verified.
    assert {g["gpu_uuid"]: g["verification"] for g in echo["gpus"]}["GPU-e0"] == "verified"
    _, alpha, _ = get(f"{explorer_url}/api/v1/nodes/{proof_fleet['alpha']}")
    a3, a0 = alpha["proofs"]["GPU-a3"], alpha["proofs"]["GPU-a0"]
    assert a3["verdict"] == a0["verdict"] == "passed"
    assert abs(_time(a3["decided_at"]) - _time(a0["decided_at"]) - timedelta(minutes=50)) < timedelta(minutes=1)


def test_a_node_never_challenged_says_it_has_no_proof(explorer_url, proof_fleet):
    status, node, _ = get(f"{explorer_url}/api/v1/nodes/{proof_fleet['charlie']}")
    assert status == 200
    assert node["proofs"] == {"GPU-c0": None, "GPU-c1": None}
    assert {g["verification"] for g in node["gpus"]} == {"unverified"}
    assert node["reputation"]["inputs"]["gpus_unverified"] == 2


def test_every_verdict_is_listed_newest_first_with_the_last_24_hours(explorer_url, proof_fleet):
    status, body, _ = get(f"{explorer_url}/api/v1/proofs")
    assert status == 200
    assert body["total"] == PROOFS and len(body["items"]) == PROOFS
    assert (body["limit"], body["offset"], body["protocol_version"]) == (100, 0, proof.PROTOCOL_VERSION)
    assert [(p["node_name"], p["gpu_uuid"], p["verdict"]) for p in body["items"][:3]] == [
        ("alpha", "GPU-a3", "passed"), ("echo", "GPU-e0", "no_answer"), ("bravo", "GPU-b1", "failed")]
    times = [_time(p["decided_at"]) for p in body["items"]]
    assert times == sorted(times, reverse=True)
    summary = body["last_24h"]
    assert (summary["passed"], summary["failed"], summary["no_answer"], summary["rounds"]) == (12, 1, 1, PROOFS)
    assert _time(summary["last_round_at"]) == _time(body["items"][0]["offered_at"])
    assert summary["window_h"] == 24
    # The snapshot's tick, as every other endpoint.
    _, fleet, _ = get(f"{explorer_url}/api/v1/fleet")
    assert (body["as_of"], body["snapshot_sha256"]) == (fleet["as_of"], fleet["snapshot_sha256"])


def test_proofs_filter_by_node_and_verdict(explorer_url, proof_fleet):
    _, failed, _ = get(f"{explorer_url}/api/v1/proofs?verdict=failed")
    assert failed["total"] == 1
    assert [(p["node_id"], p["gpu_uuid"], p["reason"]) for p in failed["items"]] == [
        (proof_fleet["bravo"], "GPU-b1", PROOF_FAILED_REASON)]
    _, bravo, _ = get(f"{explorer_url}/api/v1/proofs?node_id={proof_fleet['bravo']}")
    assert bravo["total"] == 3 and {p["node_name"] for p in bravo["items"]} == {"bravo"}
    _, both, _ = get(f"{explorer_url}/api/v1/proofs?node_id={proof_fleet['bravo']}&verdict=passed")
    assert sorted(p["gpu_uuid"] for p in both["items"]) == ["GPU-b0", "GPU-b1"]
    _, none, _ = get(f"{explorer_url}/api/v1/proofs?node_id={proof_fleet['charlie']}")
    assert (none["total"], none["items"]) == (0, [])
    _, no_answer, _ = get(f"{explorer_url}/api/v1/proofs?verdict=no_answer&node_id={proof_fleet['echo']}")
    assert [p["gpu_uuid"] for p in no_answer["items"]] == ["GPU-e0"]


def test_proofs_page_through_every_verdict_once(explorer_url, proof_fleet):
    _, everything, _ = get(f"{explorer_url}/api/v1/proofs")
    seen = []
    for offset in range(0, PROOFS + 4, 4):
        status, page, _ = get(f"{explorer_url}/api/v1/proofs?limit=4&offset={offset}")
        assert status == 200 and page["total"] == PROOFS and (page["limit"], page["offset"]) == (4, offset)
        seen += page["items"]
    assert seen == everything["items"]
    _, past_the_end, _ = get(f"{explorer_url}/api/v1/proofs?offset=500")
    assert past_the_end["items"] == []


def test_proofs_download_as_csv(explorer_url, proof_fleet):
    status, text, headers = get(f"{explorer_url}/api/v1/proofs?format=csv&verdict=failed")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["node_name"], r["gpu_uuid"], r["verdict"], r["reason"]) for r in rows] == [
        ("bravo", "GPU-b1", "failed", PROOF_FAILED_REASON)]


@pytest.mark.parametrize("query, reason", [
    ("verdict=cheated", "verdict must be one of passed, failed, no_answer"),
    ("node_id=abc", "node_id must be a node id"),
    ("node_id=%C2%B2", "node_id must be a node id"),
    ("node_id=-3", "node_id must be a node id"),
    ("limit=0", "limit must be an integer between 1 and 1000"),
    ("limit=1001", "limit must be an integer between 1 and 1000"),
    ("offset=-1", "offset must be an integer between"),
    ("offset=x", "offset must be an integer between"),
    ("format=xml", "format must be json or csv"),
    ("color=red", "unknown parameter 'color'"),
])
def test_bad_proof_parameters_get_a_json_400_with_the_reason(explorer_url, query, reason):
    status, body, headers = get(f"{explorer_url}/api/v1/proofs?{query}")
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    assert body["error"] == "bad_parameter" and reason in body["reason"]


def test_proof_failed_findings_are_a_kind_of_finding(explorer_url, proof_fleet):
    status, body, _ = get(f"{explorer_url}/api/v1/integrity?kind=proof_failed")
    assert status == 200
    assert [(f["kind"], f["node_name"], f["gpu_uuid"], f["open"]) for f in body["items"]] == [
        ("proof_failed", "bravo", "GPU-b1", True)]
    assert body["by_kind"] == {"virtualized": 1, "proof_failed": 1} and body["gpus"]["flagged"] == 2
    assert body["proofs_24h"]["failed"] == 1 and body["proofs_24h"]["passed"] == 12


def test_the_methodology_carries_the_proof_protocol_and_what_verified_means(explorer_url):
    status, definitions, _ = get(f"{explorer_url}/api/v1/methodology")
    assert status == 200
    entry = next(d for d in definitions if d["id"] == "proof-of-gpu")
    assert entry["version"] == proof.PROTOCOL_VERSION
    assert entry["parameters"] == entry["constants"] == proof.parameters()
    assert "4 x 2^-11 x sqrt(k) / 3" in entry["formula"] and "docs/proof.md" in entry["text"]
    assert any("def judge" in c["source"] for c in entry["code"])
    assert [s["name"] for s in entry["sql"]] == ["PROVED_SQL"]
    a100 = next(m for m in entry["models"] if m["model"] == "NVIDIA A100-SXM4-80GB")
    assert (a100["n"], a100["k"]) == (67584, 68352) and a100["fp16_tensor_tflops"] == 312.0
    # Verified means a passed proof, no longer "examined by the integrity checks".
    gpu_state = next(d for d in definitions if d["id"] == "gpu-state")
    assert "passed a proof of GPU" in gpu_state["text"] and "examined" not in gpu_state["text"]
    assert "proof_failed" in gpu_state["text"] and "PROVED_SQL" in [s["name"] for s in gpu_state["sql"]]
    integrity = next(d for d in definitions if d["id"] == "integrity")
    assert "**proof_failed**" in integrity["text"]
