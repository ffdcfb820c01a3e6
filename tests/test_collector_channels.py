"""Operators add alert channels and list their own; no token sees another operator's."""

from __future__ import annotations

import psycopg

from fleetscope.registry import create_operator
from tests.collector_harness import bearer, register

BAD_CHANNELS = [
    ({"kind": "sms", "target": "+15550100"}, "kind"),
    ({"kind": None, "target": "https://x.example/"}, "kind"),
    ({"kind": "webhook", "target": "not a url"}, "target"),
    ({"kind": "webhook", "target": "ftp://files.example/hook"}, "target"),
    ({"kind": "webhook", "target": "https:///no-host"}, "target"),
    ({"kind": "slack", "target": "file:///etc/passwd"}, "target"),
    ({"kind": "discord", "target": "https://discord.example/" + "x" * 2000}, "target"),
    ({"kind": "email", "target": "ops"}, "target"),
    ({"kind": "email", "target": "ops@localhost"}, "target"),
    ({"kind": "email", "target": "two@@example.com"}, "target"),
    ({"kind": "email", "target": "Ops <ops@example.com>"}, "target"),
    ({"kind": "email", "target": 42}, "target"),
    ({"kind": "webhook"}, "target"),
]


async def add(client, token: str, kind: str, target: str):
    return await client.post("/api/v1/channels", json={"kind": kind, "target": target}, headers=bearer(token))


async def listed(client, token: str) -> list[tuple[str, str]]:
    response = await client.get("/api/v1/channels", headers=bearer(token))
    assert response.status == 200
    return [(c["kind"], c["target"]) for c in (await response.json())["channels"]]


async def test_an_operator_adds_channels_and_lists_only_its_own(client, operator_token, dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, rival = create_operator(conn, "rival")
    created = []
    for kind, target in [("webhook", "https://hooks.acme.example/fleet"), ("slack", "https://hooks.slack.com/services/T/B/X"),
                         ("discord", "https://discord.com/api/webhooks/1/abc"), ("email", "oncall@acme.example")]:
        response = await add(client, operator_token, kind, target)
        assert response.status == 201, await response.text()
        created.append((await response.json())["channel_id"])
    assert len(set(created)) == 4
    assert (await add(client, rival, "email", "noc@rival.example")).status == 201

    assert await listed(client, operator_token) == [
        ("webhook", "https://hooks.acme.example/fleet"), ("slack", "https://hooks.slack.com/services/T/B/X"),
        ("discord", "https://discord.com/api/webhooks/1/abc"), ("email", "oncall@acme.example")]
    assert await listed(client, rival) == [("email", "noc@rival.example")]


async def test_adding_the_same_channel_again_returns_it_instead_of_a_second_row(client, operator_token, dsn):
    first = await add(client, operator_token, "webhook", "https://hooks.acme.example/fleet")
    again = await add(client, operator_token, "webhook", "https://hooks.acme.example/fleet")
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["channel_id"] == (await again.json())["channel_id"]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM alert_channels").fetchone()[0] == 1


async def test_a_bad_channel_is_400_naming_the_field(client, operator_token, dsn):
    for body, named in BAD_CHANNELS:
        response = await client.post("/api/v1/channels", json=body, headers=bearer(operator_token))
        assert response.status == 400, (body, await response.text())
        answer = await response.json()
        assert answer["reason"] == "invalid_field" and answer["error"].startswith(named), (body, answer)
    assert await listed(client, operator_token) == []


async def test_channels_need_an_operator_token_and_a_node_token_sees_nothing(client, operator_token):
    _, node_token = await register(client, operator_token)
    assert (await add(client, operator_token, "email", "oncall@acme.example")).status == 201
    for headers in ({}, bearer(node_token), bearer("fso_" + "A" * 43)):
        assert (await client.get("/api/v1/channels", headers=headers)).status == 401
        response = await client.post("/api/v1/channels", json={"kind": "email", "target": "x@evil.example"},
                                     headers=headers)
        assert response.status == 401
    assert await listed(client, operator_token) == [("email", "oncall@acme.example")]
