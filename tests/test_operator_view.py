"""An operator sees only its own nodes, with the public definitions' states and uptime, and its alert history."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from fleetscope.operators import operator_view
from fleetscope.snapshot import fleet_snapshot
from fleetscope.uptime import uptime
from tests.collector_harness import bearer
from tests.fleetdata import T0, Fleet, at


def _fleet(conn: psycopg.Connection) -> tuple[Fleet, dict[str, int], Fleet]:
    acme, rival = Fleet(conn), Fleet(conn)
    nodes = {"up": acme.node(name="a-up"), "late": acme.node(name="b-late"), "down": acme.node(name="c-down"),
             "new": acme.node(name="d-new")}
    rival.node(name="rival-node")
    acme.observing(T0 - timedelta(days=8), T0)
    for seconds in range(-3600, 0, 15):
        acme.observe(nodes["up"], at(seconds + 5))
    acme.observe(nodes["late"], at(-20))
    acme.observe(nodes["down"], at(-45))
    acme.observe(nodes["down"], at(-30), ok=False)
    channel = conn.execute("INSERT INTO alert_channels (operator_id, kind, target) VALUES (%s, 'webhook',"
                           " 'https://hooks.acme.example/x') RETURNING channel_id", (acme.operator_id,)).fetchone()[0]
    conn.execute("INSERT INTO alert_deliveries (channel_id, node_id, event, payload, attempt, attempted_at, ok, error,"
                 " kind) VALUES (%s, %s, 'node_down', %s, 1, %s, false, 'HTTP 503 Service Unavailable', 'webhook'),"
                 " (%s, %s, 'node_down', %s, 2, %s, true, NULL, 'webhook')",
                 (channel, nodes["down"], '{"since": "2026-11-24T11:59:59Z"}', at(-1),
                  channel, nodes["down"], '{"since": "2026-11-24T11:59:59Z"}', at(0)))
    return acme, nodes, rival


def test_the_view_lists_only_the_operators_nodes_with_states_uptime_and_alerts(conn):
    acme, nodes, rival = _fleet(conn)
    view = operator_view(conn, acme.operator_id, at=T0)
    assert [n["name"] for n in view["nodes"]] == ["a-up", "b-late", "c-down", "d-new"]
    assert [n["state"] for n in view["nodes"]] == ["up", "late", "down", "new"]
    assert [n["online"] for n in view["nodes"]] == [True, True, False, False]
    # The same online count as the public snapshot of this operator's fleet (the rival's node is offline too).
    snap = fleet_snapshot(conn, as_of=T0).body
    assert snap["nodes"]["online"] == sum(n["online"] for n in view["nodes"])
    first = view["nodes"][0]
    expected = uptime(conn, nodes["up"], start=T0 - timedelta(hours=24), end=T0)
    # Seen in every slot since its first report an hour ago: uptime counts from there (issue 16).
    assert first["uptime_24h"] == expected.ratio == 1.0 and expected.window_slots == 240
    assert [(a["event"], a["attempt"], a["ok"]) for a in view["alerts"]] == [("node_down", 2, True),
                                                                            ("node_down", 1, False)]
    assert view["alerts"][1]["error"] == "HTTP 503 Service Unavailable" and view["alerts"][0]["name"] == "c-down"
    assert [c["target"] for c in view["channels"]] == ["https://hooks.acme.example/x"]

    theirs = operator_view(conn, rival.operator_id, at=T0)
    assert [n["name"] for n in theirs["nodes"]] == ["rival-node"]
    assert theirs["alerts"] == [] and theirs["channels"] == []
    assert operator_view(conn, 10**9, at=T0) is None


async def test_the_operator_endpoint_needs_an_operator_token_and_shows_only_its_nodes(client, operator_token, dsn):
    response = await client.post("/api/v1/nodes", json={"name": "mine", "scrape_url": None, "interval_s": 15},
                                 headers=bearer(operator_token))
    node_token = (await response.json())["node_token"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        Fleet(conn).node(name="someone-elses")
    response = await client.get("/api/v1/operator", headers=bearer(operator_token))
    assert response.status == 200
    view = await response.json()
    assert view["operator"] == "acme"
    assert [(n["name"], n["state"]) for n in view["nodes"]] == [("mine", "new")]
    for headers in ({}, bearer(node_token), bearer("fso_" + "A" * 43)):
        assert (await client.get("/api/v1/operator", headers=headers)).status == 401
