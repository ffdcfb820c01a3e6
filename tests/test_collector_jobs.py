"""The marketplace posts jobs with the admin token; posting is an idempotent upsert by job_id."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import psycopg

from collector.app import make_app
from tests.collector_harness import ADMIN_TOKEN, bearer, collector_settings, register, rejects

JOB_COLUMNS = "job_id, node_id, gpu_count, price_per_gpu_hour, started_at, ended_at, status"


def job(node_id: int, /, **fields) -> dict:
    return {"job_id": "job-1", "node_id": node_id, "gpu_count": 2, "price_per_gpu_hour": 1.25,
            "started_at": "2026-11-24T10:00:00Z", "ended_at": None, "status": "running", **fields}


def rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT {JOB_COLUMNS}, updated_at FROM jobs ORDER BY job_id").fetchall()


async def post_job(client, body, token: str = ADMIN_TOKEN):
    return await client.post("/api/v1/jobs", json=body, headers=bearer(token))


async def test_posting_a_job_twice_leaves_one_untouched_row_and_an_update_changes_it(client, operator_token, dsn):
    node_id, _ = await register(client, operator_token)
    first = await post_job(client, job(node_id))
    assert first.status == 201 and (await first.json())["created"] is True
    [created] = rows(dsn)
    assert created[:7] == ("job-1", node_id, 2, Decimal("1.250000"), datetime(2026, 11, 24, 10, tzinfo=timezone.utc),
                           None, "running")

    again = await post_job(client, job(node_id))
    assert again.status == 200 and (await again.json())["created"] is False
    assert rows(dsn) == [created]  # not even updated_at moved

    ended = await post_job(client, job(node_id, ended_at="2026-11-24T12:30:00+02:00", status="succeeded",
                                       price_per_gpu_hour="1.300000"))
    assert ended.status == 200
    [updated] = rows(dsn)
    assert updated[3:7] == (Decimal("1.300000"), datetime(2026, 11, 24, 10, tzinfo=timezone.utc),
                            datetime(2026, 11, 24, 10, 30, tzinfo=timezone.utc), "succeeded")
    assert updated[7] >= created[7]


BAD_JOBS = [
    ({"job_id": ""}, "job_id"),
    ({"job_id": None}, "job_id"),
    ({"gpu_count": 0}, "gpu_count"),
    ({"gpu_count": -1}, "gpu_count"),
    ({"gpu_count": 1.5}, "gpu_count"),
    ({"gpu_count": 10**12}, "gpu_count"),
    ({"price_per_gpu_hour": -0.01}, "price_per_gpu_hour"),
    ({"price_per_gpu_hour": "abc"}, "price_per_gpu_hour"),
    ({"price_per_gpu_hour": 1e20}, "price_per_gpu_hour"),
    ({"price_per_gpu_hour": 0.0000001}, "price_per_gpu_hour"),
    ({"price_per_gpu_hour": True}, "price_per_gpu_hour"),
    ({"price_per_gpu_hour": None}, "price_per_gpu_hour"),
    ({"started_at": "2026-11-24T10:00:00"}, "started_at"),
    ({"started_at": "yesterday"}, "started_at"),
    ({"started_at": 1764000000}, "started_at"),
    ({"status": "done"}, "status"),
    ({"status": "succeeded"}, "status"),  # ended_at is null
    ({"ended_at": "2026-11-24T11:00:00Z"}, "status"),  # still "running"
    ({"ended_at": "2026-11-24T09:00:00Z", "status": "failed"}, "ended_at"),
    ({"node_id": "1"}, "node_id"),
    ({"node_id": 0}, "node_id"),
]


async def test_a_bad_job_is_400_naming_the_field(client, operator_token, dsn):
    node_id, _ = await register(client, operator_token)
    for fields, named in BAD_JOBS:  # one database for all the cases: each costs ~0.4 s to create
        response = await post_job(client, job(node_id, **fields))
        assert response.status == 400, (fields, await response.text())
        answer = await response.json()
        assert answer["reason"] == "invalid_field" and answer["error"].startswith(named), (fields, answer)
    assert rows(dsn) == []
    assert await rejects(client, "invalid_field") == len(BAD_JOBS)


async def test_a_job_on_an_unknown_node_is_404(client, dsn):
    response = await post_job(client, job(987654))
    assert response.status == 404 and (await response.json())["reason"] == "unknown_node"
    assert rows(dsn) == []


async def test_jobs_need_the_admin_token(client, operator_token, dsn):
    node_id, node_token = await register(client, operator_token)
    for token in (operator_token, node_token, ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]):
        assert (await post_job(client, job(node_id), token)).status == 401
    assert (await client.post("/api/v1/jobs", json=job(node_id))).status == 401
    assert rows(dsn) == []
    assert await rejects(client, "bad_token") == 4


async def test_without_an_admin_token_configured_jobs_answer_503_saying_so(aiohttp_client, dsn, tmp_path, storage):
    settings = collector_settings(dsn, tmp_path, admin_token=None)
    client = await aiohttp_client(make_app(settings, appendable=storage))
    response = await post_job(client, job(1))
    assert response.status == 503
    assert "no admin token configured" in (await response.json())["error"]
    await client.close()  # before the test's database is dropped (see test_collector_harness.client)
