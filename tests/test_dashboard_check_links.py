"""A failing consistency check links to the nodes that make it fail, on the overview and in the API."""

from __future__ import annotations

import json

import psycopg
import pytest
from plotly.utils import PlotlyJSONEncoder

from tests.historydata import app_with_history


@pytest.fixture(scope="module")
def app_and_fleet(pg_server, tmp_path_factory):
    # The gpu_lost host is hired for all its GPUs, one of which is lost: one
    # GPU is covered by a running job while offline.
    with app_with_history(pg_server, tmp_path_factory, days=1) as (app, fleet, ids, _history):
        yield app, fleet, ids


def _lost_node(fleet, ids) -> int:
    return next(ids[i] for i, host in enumerate(fleet.hosts) if host.profile == "gpu_lost")


def test_the_api_names_the_nodes_behind_a_failing_check(app_and_fleet):
    app, fleet, ids = app_and_fleet
    client = app.server.test_client()
    fleet_body = client.get("/api/v1/fleet").get_json()
    assert {c["name"]: c["ok"] for c in fleet_body["checks"]}["no_hired_offline"] is False
    body = client.get("/api/v1/checks/no_hired_offline/nodes").get_json()
    assert body["ok"] is False and body["snapshot_sha256"] == fleet_body["snapshot_sha256"]
    assert [n["node_id"] for n in body["nodes"]] == [_lost_node(fleet, ids)]
    assert body["nodes"][0]["detail"] == "1 GPUs hired while offline"


def test_a_check_that_holds_names_no_node_and_an_unknown_check_is_a_404(app_and_fleet):
    app, _, _ = app_and_fleet
    client = app.server.test_client()
    body = client.get("/api/v1/checks/hired_hours_within_online_hours/nodes").get_json()
    assert body["ok"] is True and body["nodes"] == []
    assert client.get("/api/v1/checks/no_such_check/nodes").status_code == 404
    assert client.get("/api/v1/checks/no_hired_offline/nodes?x=1").status_code == 400


def test_the_overview_check_links_to_the_node_page(app_and_fleet):
    app, fleet, ids = app_and_fleet
    from dashboard.pages import overview

    with app.server.test_request_context("/"):
        rendered = json.dumps(overview.body(), cls=PlotlyJSONEncoder)
    node = _lost_node(fleet, ids)
    component = json.loads(rendered)
    item = _find(component, "check-no_hired_offline-nodes")
    assert item is not None, "the failing check lists no nodes"
    assert f'"href": "/nodes/{node}"' in json.dumps(item)
    # The node page it links to exists.
    assert app.server.test_client().get(f"/nodes/{node}").status_code == 200


def _find(tree, element_id):
    if isinstance(tree, dict):
        if tree.get("props", {}).get("id") == element_id:
            return tree
        children = tree.get("props", {}).get("children")
        return _find(children, element_id) if children is not None else None
    if isinstance(tree, list):
        for item in tree:
            found = _find(item, element_id)
            if found is not None:
                return found
    return None


def test_a_node_that_sold_more_hours_than_it_was_online_is_named_by_the_hours_check(dsn):
    from datetime import timedelta

    from fleetscope.check_nodes import nodes_behind
    from fleetscope.snapshot import fleet_snapshot
    from tests.fleetdata import T0, Fleet

    with psycopg.connect(dsn, autocommit=True) as conn:
        fleet = Fleet(conn)
        fleet.observing(T0 - timedelta(days=2), T0)
        honest = fleet.node(name="honest")
        seller = fleet.node(name="seller")
        for node in (honest, seller):
            fleet.gpus(node, [f"GPU-{node}-0"], since=T0 - timedelta(days=2))
        for minutes in range(0, 26 * 60):  # every 15 s slot of the last 26 hours
            fleet.observe(honest, T0 - timedelta(minutes=minutes, seconds=0))
            fleet.observe(honest, T0 - timedelta(minutes=minutes, seconds=15))
            fleet.observe(honest, T0 - timedelta(minutes=minutes, seconds=30))
            fleet.observe(honest, T0 - timedelta(minutes=minutes, seconds=45))
        fleet.observe(seller, T0 - timedelta(hours=20))  # seen once, hired all day
        for node in (honest, seller):
            fleet.job(f"job-{node}", node, gpu_count=1, price="1.00", started_at=T0 - timedelta(hours=25))
        checks = {c["name"]: c for c in fleet_snapshot(conn, as_of=T0).body["checks"]}
        assert not checks["hired_hours_within_online_hours"]["ok"]
        behind = nodes_behind(conn, "hired_hours_within_online_hours", at=T0, mode="plain")
        assert [n["node_id"] for n in behind] == [seller]
        assert behind[0]["name"] == "seller" and behind[0]["detail"].startswith("hired 24")
