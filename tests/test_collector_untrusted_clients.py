"""Clients that do not behave: bad-token floods, slow or half-open connections, unreadable heads (issue 15, item 7).

A source address that keeps failing authentication is answered 429 (its
requests with a cached, valid token still pass); a connection that never
completes its headers, or a body that stalls, is closed within seconds, not
held for an hour; a header over the limit or with a NUL gets a JSON 400 and
no traceback in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import psycopg
import pytest

import collector.app
from collector import ratelimit, requests
from collector.process import run
from collector.ingest import MemoryAppendable
from fleetscope.registry import create_operator
from tests.collector_harness import bearer, collector_settings, push, register
from tests.conftest import free_port


async def test_a_flood_of_bad_tokens_from_one_address_is_limited_but_valid_cached_tokens_pass(client, operator_token):
    await register(client, operator_token)  # the operator's token is now cached
    statuses = []
    for i in range(ratelimit.FAILURE_BURST + 10):
        statuses.append((await push(client, f"fsn_not-a-real-token-{i:04d}")).status)
    assert statuses[:ratelimit.FAILURE_BURST] == [401] * ratelimit.FAILURE_BURST
    assert set(statuses[ratelimit.FAILURE_BURST + 1:]) == {429}
    limited = await push(client, "fsn_not-a-real-token-last")
    assert limited.status == 429 and limited.headers["Retry-After"]
    assert (await limited.json())["reason"] == "too_many_failures"
    assert (await client.get("/api/v1/channels", headers=bearer(operator_token))).status == 200


@contextlib.asynccontextmanager
async def running_collector(dsn, tmp_path):
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run(collector_settings(dsn, tmp_path, port=port), components=[],
                                   appendable=MemoryAppendable(), stop=stop, handle_signals=False))
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.05)
    try:
        yield port
    finally:
        stop.set()
        await task


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    async with asyncio.timeout(seconds):
        return await reader.read()  # until the server closes the connection


async def test_a_connection_that_never_completes_its_headers_is_closed(dsn, tmp_path, monkeypatch):
    monkeypatch.setattr(collector.app, "HEADER_TIMEOUT_S", 1.0)
    async with running_collector(dsn, tmp_path) as port:
        _, idle = await asyncio.open_connection("127.0.0.1", port)  # half-open: says nothing
        reader, slow = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\n")  # and never ends its headers
        started = time.monotonic()
        await _closed_within(reader, 5.0)
        assert time.monotonic() - started < 3.0
        idle.close()
        slow.close()


async def test_a_stalled_body_is_refused_within_the_body_deadline(dsn, tmp_path, monkeypatch):
    monkeypatch.setattr(requests, "BODY_READ_TIMEOUT_S", 1.0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        token = create_operator(conn, "acme")[1]
    async with running_collector(dsn, tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"name\": ")  # then nothing
        started = time.monotonic()
        async with asyncio.timeout(5.0):
            head = await reader.readuntil(b"\r\n\r\n")
        took = time.monotonic() - started
        writer.close()
    assert head.startswith(b"HTTP/1.1 408") and b"application/json" in head.lower()
    assert took < 3.0


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
])
async def test_an_unreadable_head_gets_a_json_400_and_no_traceback(dsn, tmp_path, caplog, head):
    async with running_collector(dsn, tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        answer = await _closed_within(reader, 5.0)
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.split(b" ")[1] == b"400"
    assert b"application/json" in headers.lower()
    assert json.loads(body)["reason"] == "bad_request"
    assert "Traceback" not in caplog.text
