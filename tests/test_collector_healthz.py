"""/healthz says whether the collector can reach its database, and why not."""

from __future__ import annotations

from collector.app import make_app
from tests.conftest import free_port
from tests.collector_harness import collector_settings


async def test_healthz_is_200_when_the_database_answers(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"ok": True, "database": "ok", "collector_id": "test-collector:0", "shard": "0/1"}


async def test_healthz_is_503_with_the_reason_when_the_database_is_unreachable(aiohttp_client, tmp_path, storage):
    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    settings = collector_settings(dsn, tmp_path, db_timeout_s=0.5)
    client = await aiohttp_client(make_app(settings, appendable=storage))
    response = await client.get("/healthz")
    assert response.status == 503
    body = await response.json()
    assert body["ok"] is False and body["error"].startswith("database unavailable")

    # And an API call that needs the database is a 503 too, not a 500.
    registered = await client.post("/api/v1/nodes", json={"name": "n"}, headers={"Authorization": "Bearer fso_x"})
    assert registered.status == 503 and registered.headers["Retry-After"]
    assert (await registered.json())["reason"] == "database_unavailable"
