"""Another operator's token can neither see, nor delete, nor change a channel; the owner can delete it."""

from __future__ import annotations

import psycopg

from fleetscope.registry import create_operator
from tests.collector_harness import bearer


async def test_another_operator_cannot_see_or_delete_a_channel_and_its_owner_can(client, operator_token, dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, rival = create_operator(conn, "rival")
    response = await client.post("/api/v1/channels", json={"kind": "webhook", "target": "https://hooks.acme.example/x"},
                                 headers=bearer(operator_token))
    channel_id = (await response.json())["channel_id"]

    listed = await (await client.get("/api/v1/channels", headers=bearer(rival))).json()
    assert listed == {"channels": []}
    for path in (f"/api/v1/channels/{channel_id}", "/api/v1/channels/999999", "/api/v1/channels/abc"):
        response = await client.delete(path, headers=bearer(rival))
        assert response.status == 404, path
        assert (await response.json())["reason"] == "not_found"
    # Posting the same target with the rival's token makes the rival's own channel, never touches acme's.
    response = await client.post("/api/v1/channels", json={"kind": "webhook", "target": "https://hooks.acme.example/x"},
                                 headers=bearer(rival))
    assert response.status == 201 and (await response.json())["channel_id"] != channel_id
    assert (await client.delete(f"/api/v1/channels/{channel_id}", headers={})).status == 401

    mine = await (await client.get("/api/v1/channels", headers=bearer(operator_token))).json()
    assert [c["channel_id"] for c in mine["channels"]] == [channel_id]
    assert (await client.delete(f"/api/v1/channels/{channel_id}", headers=bearer(operator_token))).status == 204
    mine = await (await client.get("/api/v1/channels", headers=bearer(operator_token))).json()
    assert mine == {"channels": []}
    assert (await client.delete(f"/api/v1/channels/{channel_id}", headers=bearer(operator_token))).status == 404
