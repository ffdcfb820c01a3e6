"""Operators register nodes over HTTP; bad fields are 400s that say which, duplicates 409."""

from __future__ import annotations

import psycopg

from fleetscope.registry import create_operator
from tests.collector_harness import bearer, push, register, rejects


async def test_a_node_is_registered_for_the_calling_operator_and_its_token_is_stored_hashed(
        client, operator_token, dsn):
    node_id, node_token = await register(client, operator_token, "  rack-7  ",
                                         scrape_url="HTTPS://rack-7.example:9835/metrics", interval_s=30, grace_s=120)
    assert node_token.startswith("fsn_")
    assert (await push(client, node_token)).status == 204  # the token is the node's: its push is taken
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT o.name, n.name, n.scrape_url, n.interval_s, n.grace_s, n.token_hash"
                           " FROM nodes n JOIN operators o USING (operator_id) WHERE node_id = %s",
                           (node_id,)).fetchone()
    assert row[:5] == ("acme", "rack-7", "https://rack-7.example:9835/metrics", 30, 120)
    assert node_token.encode() not in bytes(row[5])


BAD_NODES = [
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": 7}, "name"),
    ({"interval_s": 7}, "interval_s"),
    ({"interval_s": 4}, "interval_s"),
    ({"interval_s": 7200}, "interval_s"),
    ({"interval_s": "15"}, "interval_s"),
    ({"interval_s": True}, "interval_s"),
    ({"interval_s": 15.5}, "interval_s"),
    ({"interval_s": 30, "grace_s": 15}, "grace_s"),
    ({"grace_s": 86401}, "grace_s"),
    ({"scrape_url": "ftp://host/metrics"}, "scrape_url"),
    ({"scrape_url": "http:///metrics"}, "scrape_url"),
    ({"scrape_url": "javascript:alert(1)"}, "scrape_url"),
    ({"scrape_url": "http://host:99999/"}, "scrape_url"),
    ({"scrape_url": 12}, "scrape_url"),
]


async def test_a_bad_field_is_400_naming_it(client, operator_token, dsn):
    for fields, named in BAD_NODES:
        body = {"name": "node", "scrape_url": None, "interval_s": 15, **fields}
        response = await client.post("/api/v1/nodes", json=body, headers=bearer(operator_token))
        assert response.status == 400, (fields, await response.text())
        answer = await response.json()
        assert answer["reason"] == "invalid_field" and answer["error"].startswith(named), (fields, answer)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 0


async def test_a_body_that_is_not_a_json_object_is_400(client, operator_token):
    for body in (b"", b"{", b"[1, 2]", b"null", b'{"name": NaN}', b"\xff", b"[" * 20_000):
        response = await client.post("/api/v1/nodes", data=body, headers=bearer(operator_token))
        assert response.status == 400, body[:20]
        assert (await response.json())["reason"] == "invalid_json"


async def test_the_same_name_twice_for_one_operator_is_409_but_another_operator_may_use_it(
        client, operator_token, dsn):
    await register(client, operator_token, "same")
    response = await client.post("/api/v1/nodes", json={"name": "same"}, headers=bearer(operator_token))
    assert response.status == 409
    assert (await response.json())["reason"] == "conflict"
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, other = create_operator(conn, "other-operator")
    await register(client, other, "same")


async def test_registration_needs_an_operator_token(client, operator_token):
    _, node_token = await register(client, operator_token)
    for headers in ({}, bearer("fso_wrong"), bearer(node_token)):
        response = await client.post("/api/v1/nodes", json={"name": "n"}, headers=headers)
        assert response.status == 401
    assert await rejects(client, "bad_token") == 2
    assert await rejects(client, "missing_token") == 1


async def test_an_unknown_path_and_a_wrong_method_are_json_4xx(client):
    missing = await client.get("/api/v1/nope")
    assert missing.status == 404 and (await missing.json())["reason"] == "not_found"
    wrong = await client.get("/api/v1/push")
    assert wrong.status == 405 and "POST" in wrong.headers["Allow"]
    assert (await wrong.json())["reason"] == "method_not_allowed"
