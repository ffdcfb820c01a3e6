"""The node, Integrity and Methodology pages show proofs of GPU: their layouts, rendered from the same Service as the API.

The layouts are built in a request of the app (as Dash's server builds them
for a browser) and searched for their element ids; the browser test
(tests/test_dashboard_proof_browser.py) looks at what Chromium shows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fleetscope import proof
from tests.dashboard_harness import PROOF_FAILED_REASON, get, proof_fleet  # noqa: F401


@pytest.fixture
def app(explorer, proof_fleet):
    from dashboard.app import create_app

    app = create_app(explorer)
    with app.server.test_request_context("/"):
        yield app


def _walk(component) -> Iterator:
    yield component
    children = getattr(component, "children", None)
    if children is None:
        return
    for child in children if isinstance(children, (list, tuple)) else [children]:
        yield from _walk(child)


def _by_id(tree) -> dict:
    return {c.id: c for c in _walk(tree) if getattr(c, "id", None)}


def _text(component) -> str:
    return " ".join(str(c) for c in _walk(component) if isinstance(c, (str, int, float)))


def test_the_node_page_shows_each_gpus_latest_verdict(app, proof_fleet):
    from dashboard.pages import node

    ids = _by_id(node.body(str(proof_fleet["bravo"])))
    assert {"node-proof", "node-proofs", "node-gpus", "node-reputation", "node-findings"} <= set(ids)
    assert "node-proofs-none" not in ids
    rows = [_text(tr) for tr in _walk(ids["node-proofs"]) if type(tr).__name__ == "Tr"][1:]
    assert len(rows) == 2
    assert "GPU-b0" in rows[0] and "passed" in rows[0] and "2.75 s" in rows[0] and "120.7 TFLOPS implied" in rows[0]
    assert "counts towards verified until" in rows[0]
    assert "GPU-b1" in rows[1] and "failed" in rows[1] and PROOF_FAILED_REASON in rows[1]


def test_a_node_never_challenged_says_so_on_its_page(app, proof_fleet):
    from dashboard.pages import node

    ids = _by_id(node.body(str(proof_fleet["charlie"])))
    assert "node-proofs" not in ids
    text = _text(ids["node-proofs-none"])
    assert "no proof of GPU" in text and "counted but never verified" in text and "dcgm-exporter" in text


def test_the_integrity_page_shows_the_last_24_hours_and_the_verdicts(app, explorer_url, proof_fleet):
    from dashboard.pages import integrity

    ids = _by_id(integrity.render())
    _, api, _ = get(f"{explorer_url}/api/v1/proofs?limit=1000")
    for key in ("passed", "failed", "no_answer", "rounds"):
        assert ids[f"integrity-proofs-{key}"].to_plotly_json()["props"]["data-value"] == str(api["last_24h"][key])
    assert ids["integrity-proofs-last_round_at"].to_plotly_json()["props"]["data-value"] == api["last_24h"]["last_round_at"]
    grid = ids["integrity-proofs"]
    assert [(r["gpu_uuid"], r["verdict"]) for r in grid.rowData] == [(p["gpu_uuid"], p["verdict"].replace("_", " "))
                                                                      for p in api["items"]]
    failed = next(r for r in grid.rowData if r["verdict"] == "failed")
    assert failed["node"] == f"[bravo](/nodes/{proof_fleet['bravo']})" and failed["reason"] == PROOF_FAILED_REASON
    assert {c["field"] for c in grid.columnDefs} >= {"model", "node", "gpu_uuid", "verdict", "reason", "seconds",
                                                     "tflops", "decided_at"}
    # proof_failed findings are among the findings.
    assert "proof_failed" in [r["kind"] for r in ids["integrity-findings"].rowData]
    assert "proof_failed 1" in _text(ids["integrity-by-kind"])


def test_the_methodology_page_has_the_proof_of_gpu_with_its_parameters(app):
    from dashboard.pages import methodology

    ids = _by_id(methodology.layout())
    section = ids["definition-proof-of-gpu"]
    assert f"version {proof.PROTOCOL_VERSION}" in _text(section)
    shown = {tr.children[0].children: tr.children[1].children.children for tr in _walk(ids["constants-proof-of-gpu"])
             if type(tr).__name__ == "Tr"}
    assert shown == {k: str(v) for k, v in proof.parameters().items()}
    models = _text(ids["models-proof-of-gpu"])
    assert "NVIDIA H100 80GB HBM3" in models and "99,584" in models
    assert "passed a proof of GPU" in _text(ids["definition-gpu-state"])
