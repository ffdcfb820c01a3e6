"""The charts' series endpoints: each range picker value answers its own span, steps and annotations."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dashboard.charts import OUTAGE_SETTLE
from tests.historydata import app_with_history


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def client(pg_server, tmp_path_factory):
    with app_with_history(pg_server, tmp_path_factory, days=3, checks=True) as (app, _fleet, ids, history):
        yield app.server.test_client(), ids, history


@pytest.mark.parametrize(("rng", "span", "money_buckets"), [("24h", timedelta(hours=24), 24),
                                                             ("7d", timedelta(days=7), 4), ("30d", timedelta(days=30), 4)])
def test_the_fleet_series_covers_its_range_from_the_fleets_first_registration(client, rng, span, money_buckets):
    test_client, ids, history = client
    body = test_client.get(f"/api/v1/fleet/series?range={rng}").get_json()
    at = _t(body["as_of"])
    assert body["range"] == rng
    since = _t(body["since"])
    # Never before the range, nor before the fleet existed: no days of zeros before it.
    assert since == max(at - span, history.span.started_at.replace(microsecond=0)) or since >= at - span
    assert since >= history.span.started_at - timedelta(seconds=1)
    times = [_t(p["as_of"]) for p in body["points"]]
    assert times == sorted(times) and times[-1] == at and times[0] >= since - timedelta(hours=6)
    # Online GPUs all along, but for a point inside our own outage or just after it (nothing observed then:
    # the snapshot rightly counts 0 online there, and the chart breaks its line, charts.OUTAGE_SETTLE);
    # whether a point of the range's steps falls there depends on the hour the test runs.
    outages = [(_t(o["start"]), _t(o["end"]) + OUTAGE_SETTLE) for o in body["annotations"]["outages"]]
    assert all(p["gpus"]["online"] > 0 for p in body["points"][1:]
               if not any(lo <= _t(p["as_of"]) <= hi for lo, hi in outages))
    assert money_buckets <= len(body["money"]) <= money_buckets + 1
    assert sum(m["gpu_hours"] for m in body["money"]) > 0
    assert body["simulated"][0]["collector_id"] == "simulated-history"
    if rng != "24h":  # the jump and our outage are more than a day back
        assert {j["metric"] for j in body["annotations"]["fleet_jumps"]} == {"registered", "online"}
        [outage] = body["annotations"]["outages"]
        assert _t(outage["start"]) == history.outage[0].replace(microsecond=history.outage[0].microsecond)
        assert outage["minutes"] == pytest.approx(50, abs=0.1)


def test_a_node_series_has_uptime_bars_utilisation_and_reputation_for_each_range(client):
    test_client, ids, history = client
    node = ids[0]
    for rng, bars in (("24h", 24), ("7d", 12), ("30d", 3)):
        body = test_client.get(f"/api/v1/nodes/{node}/series?range={rng}").get_json()
        assert body["node_id"] == node and body["range"] == rng
        assert bars <= len(body["uptime"]) <= bars + 1
        judged = [b for b in body["uptime"] if b["ratio"] is not None]
        assert judged and all(0 <= b["ratio"] <= 1 for b in judged)
        assert any(len(s["time"]) for s in body["telemetry"].values())
        assert body["reputation"] and all(0 <= p["score"] <= 100 for p in body["reputation"])
        assert body["reputation"][-1]["at"] == body["as_of"]


@pytest.mark.parametrize("query", ["range=1y", "range=", "days=7", "range=7d&x=1"])
def test_a_range_the_picker_does_not_offer_is_a_400_with_the_reason(client, query):
    test_client, ids, _ = client
    for url in (f"/api/v1/fleet/series?{query}", f"/api/v1/nodes/{ids[0]}/series?{query}"):
        response = test_client.get(url)
        assert response.status_code == 400, url
        assert response.get_json()["error"] == "bad_parameter" and response.get_json()["reason"]


def test_the_series_of_an_unknown_node_is_a_404(client):
    test_client, _, _ = client
    assert test_client.get("/api/v1/nodes/987654/series?range=7d").status_code == 404
