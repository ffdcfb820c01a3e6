"""Every way a push is refused: the status, the reason (counted on /metrics), and nothing committed."""

from __future__ import annotations

import gzip
import zlib

import pytest

from collector.app import make_app
from collector.ingest import MemoryAppendable
from tests.collector_harness import (
    FLEET_PROM,
    TEXT_TYPE,
    bearer,
    collector_settings,
    push,
    register,
    rejects,
    sample,
    scrape_metrics,
)

MAX_BODY = 8 * 1024
MAX_TEXT = 64 * 1024
MAX_SERIES = 50


@pytest.fixture
async def small(aiohttp_client, dsn, tmp_path, storage):
    """A collector with small limits, so the limits are reached with small bodies."""
    settings = collector_settings(dsn, tmp_path, max_body_bytes=MAX_BODY, max_decompressed_bytes=MAX_TEXT,
                                  max_series_per_node=MAX_SERIES)
    test_client = await aiohttp_client(make_app(settings, appendable=storage))
    yield test_client
    await test_client.close()  # before the test's database is dropped (see test_collector_harness.client)


async def assert_refused(client, response, status: int, reason: str, storage: MemoryAppendable) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["reason"] == reason and body["error"]
    assert storage.committed == []
    assert await rejects(client, reason) >= 1
    return body


async def test_a_push_without_a_token_is_401(client, storage):
    response = await push(client, None)
    await assert_refused(client, response, 401, "missing_token", storage)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer fsn_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer",
                                    "Bearer " + "x" * 600, "Bearer fsn_\u00e9t\u00e9"])
async def test_a_push_with_a_wrong_token_is_401(client, storage, header):
    response = await push(client, None, headers={"Authorization": header})
    assert response.status == 401
    assert (await response.json())["reason"] in ("bad_token", "missing_token")
    assert storage.committed == []


async def test_an_operator_token_cannot_push(client, storage, operator_token):
    await register(client, operator_token)
    await assert_refused(client, await push(client, operator_token), 401, "bad_token", storage)


async def test_an_unparsable_body_is_400_with_the_parsers_reason(client, storage, operator_token):
    _, token = await register(client, operator_token)
    response = await push(client, token, b"DCGM_FI_DEV_GPU_UTIL{gpu=\"0\" 12\nthis is not prometheus\n")
    body = await assert_refused(client, response, 400, "unparsable", storage)
    assert "unparsable" in body["error"]


async def test_a_body_that_is_not_utf8_is_400(client, storage, operator_token):
    _, token = await register(client, operator_token)
    await assert_refused(client, await push(client, token, b"\xff\xfe" + FLEET_PROM), 400, "unparsable", storage)


async def test_a_refused_push_does_not_use_up_the_nodes_turn(client, storage, operator_token):
    _, token = await register(client, operator_token)
    assert (await push(client, token, b"garbage {{{")).status == 400
    assert (await push(client, token, FLEET_PROM)).status == 204
    assert len(storage.committed) == 1


async def test_a_second_push_within_half_the_interval_is_429_with_retry_after(client, storage, operator_token):
    node_id, token = await register(client, operator_token, interval_s=60)
    assert (await push(client, token)).status == 204
    response = await push(client, token)
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert (await response.json())["reason"] == "too_often"
    assert [b.node_id for b in storage.committed] == [node_id]  # the refused one wrote nothing
    assert await rejects(client, "too_often") == 1


async def test_a_body_declared_larger_than_the_limit_is_413(small, storage, operator_token):
    _, token = await register(small, operator_token)
    response = await push(small, token, b"# padding\n" * (MAX_BODY // 10 + 1))
    await assert_refused(small, response, 413, "body_too_large", storage)


async def test_a_chunked_body_larger_than_the_limit_is_413_while_it_streams(small, storage, operator_token):
    _, token = await register(small, operator_token)

    async def chunks():
        for _ in range(64):
            yield b"# " + b"x" * 1021 + b"\n"

    response = await small.post("/api/v1/push", data=chunks(),
                                 headers={**bearer(token), "Content-Type": TEXT_TYPE})
    await assert_refused(small, response, 413, "body_too_large", storage)


async def test_a_gzip_bomb_is_413_while_it_inflates(small, storage, operator_token):
    _, token = await register(small, operator_token)
    bomb = gzip.compress(b"\n" * (MAX_TEXT * 4))
    assert len(bomb) < MAX_BODY  # small on the wire, four times the limit inflated
    response = await push(small, token, bomb, headers={"Content-Encoding": "gzip"})
    await assert_refused(small, response, 413, "decompressed_too_large", storage)


async def test_a_gzip_bomb_is_413_under_the_default_limits(client, storage, operator_token):
    _, token = await register(client, operator_token)
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = bomb.compress(b"\0" * (64 * 2**20)) + bomb.flush()  # 64 MiB of NULs in ~64 KiB
    response = await push(client, token, body, headers={"Content-Encoding": "gzip"})
    await assert_refused(client, response, 413, "decompressed_too_large", storage)


@pytest.mark.parametrize("body", [b"\x1f\x8b\x08\x00garbage", gzip.compress(FLEET_PROM)[:-12], b"not gzip at all"])
async def test_a_corrupt_or_truncated_gzip_body_is_400(client, storage, operator_token, body):
    _, token = await register(client, operator_token)
    response = await push(client, token, body, headers={"Content-Encoding": "gzip"})
    await assert_refused(client, response, 400, "bad_gzip", storage)


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, gzip", "compress"])
async def test_an_unsupported_content_encoding_is_415(client, storage, operator_token, encoding):
    _, token = await register(client, operator_token)
    response = await push(client, token, FLEET_PROM, headers={"Content-Encoding": encoding})
    await assert_refused(client, response, 415, "unsupported_encoding", storage)


async def test_a_payload_with_too_many_series_is_413(small, storage, operator_token):
    _, token = await register(small, operator_token)
    body = "".join(f'DCGM_FI_DEV_GPU_TEMP{{gpu="{i}",UUID="GPU-{i:08d}"}} 40\n' for i in range(MAX_SERIES + 1))
    response = await push(small, token, body.encode())
    await assert_refused(small, response, 413, "too_many_series", storage)


async def test_rejected_pushes_are_counted_as_rejected(client, storage, operator_token):
    _, token = await register(client, operator_token)
    await push(client, None)
    await push(client, token, b"{{{")
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_pushes_total", result="rejected") == 2
    assert sample(metrics, "fleetscope_collector_pushes_total", result="accepted") == 0
