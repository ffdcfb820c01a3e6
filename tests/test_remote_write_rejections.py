"""POST /api/v1/write refuses bad requests whole, with the status Prometheus acts on and a counted JSON reason.

Prometheus drops a request answered with a 4xx other than 429 and retries a
5xx or 429; so bad data is a 4xx (never resent, never looped on) and a
request with any series naming another operator's node writes nothing.
"""

from __future__ import annotations

import cramjam
import psycopg
import pytest

from collector.prompb import WriteRequest, encode
from fleetscope.registry import create_operator, register_node
from tests.collector_harness import FLEET_PROM, collector_settings, register, rejects
from tests.remotewrite import series_of, write


@pytest.fixture
def settings(dsn, tmp_path):
    return collector_settings(dsn, tmp_path, max_body_bytes=64 * 2**10, max_decompressed_bytes=256 * 2**10)


async def _refused(client, response, status: int, reason: str) -> None:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["reason"] == reason and body["error"]
    assert await rejects(client, reason) == 1


async def test_a_node_token_or_a_wrong_token_is_refused_401(client, storage, operator_token):
    node_id, node_token = await register(client, operator_token)
    body = encode(series_of(FLEET_PROM, node_id))
    assert (await write(client, node_token, body)).status == 401
    assert (await write(client, "fso_" + "x" * 40, body)).status == 401
    assert (await write(client, None, body)).status == 401
    assert storage.committed == []


async def test_a_series_of_another_operators_node_refuses_the_whole_request_403(client, storage, operator_token, dsn):
    mine, _ = await register(client, operator_token)
    with psycopg.connect(dsn, autocommit=True) as conn:
        other_operator, _ = create_operator(conn, "rival")
        theirs = register_node(conn, operator_id=other_operator, name="theirs").node_id
    body = encode(series_of(FLEET_PROM, mine) + series_of(FLEET_PROM, theirs))
    await _refused(client, await write(client, operator_token, body), 403, "not_your_node")
    unknown = encode(series_of(FLEET_PROM, theirs + 1000))
    assert (await write(client, operator_token, unknown)).status == 403
    assert storage.committed == []


async def test_malformed_protobuf_is_refused_400(client, storage, operator_token):
    await register(client, operator_token)
    body = bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff\x0f truncated"))
    await _refused(client, await write(client, operator_token, body), 400, "bad_protobuf")
    assert storage.committed == []


async def test_a_body_that_is_not_snappy_is_refused_400(client, storage, operator_token):
    node_id, _ = await register(client, operator_token)
    request = WriteRequest()
    request.timeseries.add().labels.add(name="__name__", value="up")
    plain = request.SerializeToString()  # protobuf, but not compressed
    await _refused(client, await write(client, operator_token, b"\xff\xff\xff\xff\xff\xff" + plain), 400,
                   "bad_snappy")
    assert storage.committed == []


async def test_a_body_too_large_sent_or_inflated_is_refused_413(client, storage, operator_token):
    await register(client, operator_token)
    await _refused(client, await write(client, operator_token, b"\0" * (65 * 2**10)), 413, "body_too_large")
    bomb = bytes(cramjam.snappy.compress_raw(b"\0" * (300 * 2**10)))  # ~15 KB that inflates to 300 KB
    assert len(bomb) < 64 * 2**10
    await _refused(client, await write(client, operator_token, bomb), 413, "decompressed_too_large")
    assert storage.committed == []


async def test_a_series_without_its_node_label_refuses_the_request_400(client, storage, operator_token):
    node_id, _ = await register(client, operator_token)
    body = encode(series_of(FLEET_PROM, node_id) + series_of(FLEET_PROM, None))
    await _refused(client, await write(client, operator_token, body), 400, "missing_node_label")
    bad = encode(series_of(FLEET_PROM, node_id) + [({"__name__": "up", "fleetscope_node_id": "n1"}, [(1, 1.0)])])
    await _refused(client, await write(client, operator_token, bad), 400, "invalid_node_label")
    assert storage.committed == []


async def test_other_encodings_and_remote_write_2_are_refused_415(client, storage, operator_token):
    node_id, _ = await register(client, operator_token)
    body = encode(series_of(FLEET_PROM, node_id))
    response = await write(client, operator_token, body, headers={"Content-Encoding": "gzip"})
    assert response.status == 415
    v2 = {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}
    await _refused(client, await write(client, operator_token, body, headers=v2), 415, "unsupported_content_type")
    assert storage.committed == []
