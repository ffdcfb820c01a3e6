"""collector/fetch.py, the scraper's small GET client, against servers that answer with scripted bytes."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from collector import fetch

BODY = b"# TYPE x gauge\nx 1\n" * 50


class Scripted:
    """A TCP server on 127.0.0.1: each connection gets the next answer per request it reads."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers  # None: close the connection without answering
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                request = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(request)
                answer = self.answers.pop(0)
                if answer is None:
                    break
                for i in range(0, len(answer), 7):  # in small pieces, as a slow network would
                    writer.write(answer[i:i + 7])
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def connection(self, path: str = "/metrics") -> Client:
        return Client(fetch.Request(f"http://127.0.0.1:{self.port}{path}", {"Accept-Encoding": "gzip"}))


class Client:
    """One request and a pool of its own."""

    def __init__(self, request: fetch.Request) -> None:
        self.request = request
        self.pool = fetch.Pool(max_idle=4)

    async def get(self, *, max_bytes: int) -> fetch.Response:
        return await self.pool.get(self.request, max_bytes=max_bytes)

    def close(self) -> None:
        self.pool.close()


def ok(body: bytes, *headers: str) -> bytes:
    head = "\r\n".join(["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *headers, "", ""])
    return head.encode() + body


def chunked(body: bytes, trailers: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    for i in range(0, len(body), 100):
        piece = body[i:i + 100]
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n" + trailers + b"\r\n"


async def test_it_reads_lengths_chunks_and_gzip_and_keeps_the_connection():
    answers = [ok(BODY, "Content-Type: text/plain; version=0.0.4"), chunked(BODY),
               chunked(BODY, b"X-Trailer: 1\r\n"), ok(gzip.compress(BODY), "Content-Encoding: gzip")]
    async with Scripted(answers) as server:
        conn = server.connection("/metrics/7?x=1")
        for _ in range(4):
            response = await conn.get(max_bytes=1 << 20)
            assert response.status == 200 and response.body == BODY
        conn.close()
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /metrics/7?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_a_body_ended_by_the_close_and_a_connection_close_header_are_read():
    async with Scripted([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY]) as server:
        assert (await server.connection().get(max_bytes=1 << 20)).body == BODY
    async with Scripted([ok(BODY, "Connection: close"), ok(BODY)]) as server:
        conn = server.connection()
        assert (await conn.get(max_bytes=1 << 20)).body == BODY
        assert (await conn.get(max_bytes=1 << 20)).body == BODY  # on a new connection
        conn.close()
    assert server.connections == 2


async def test_an_idle_connection_the_server_dropped_is_replaced_once():
    async with Scripted([ok(BODY), None, ok(BODY)]) as server:
        conn = server.connection()
        assert (await conn.get(max_bytes=1 << 20)).body == BODY
        assert (await conn.get(max_bytes=1 << 20)).body == BODY
        conn.close()
    assert server.connections == 2


async def test_a_new_connection_closed_without_an_answer_is_a_disconnect():
    async with Scripted([None]) as server:
        with pytest.raises(fetch.Disconnected):
            await server.connection().get(max_bytes=1 << 20)


@pytest.mark.parametrize("answer", [
    ok(b"x" * 2000),
    chunked(b"x" * 2000),
    ok(gzip.compress(b"x" * 100_000), "Content-Encoding: gzip"),  # a small bomb
    b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 2000,
])
async def test_bodies_over_the_limit_are_refused(answer):
    async with Scripted([answer]) as server:
        with pytest.raises(fetch.TooLarge):
            await server.connection().get(max_bytes=1000)


@pytest.mark.parametrize("answer", [
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    b"HTTP/1.1 abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ok(b"not gzip at all", "Content-Encoding: gzip"),
    ok(gzip.compress(BODY)[:40], "Content-Encoding: gzip"),
    ok(BODY, "Content-Encoding: br"),
])
async def test_malformed_responses_are_bad_responses(answer):
    async with Scripted([answer]) as server:
        with pytest.raises(fetch.BadResponse):
            await server.connection().get(max_bytes=1 << 20)


async def test_a_refused_connection_raises_connection_refused():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await Client(fetch.Request(f"http://127.0.0.1:{port}/metrics", {})).get(max_bytes=1000)


async def test_the_pool_keeps_at_most_max_idle_connections():
    async with Scripted([ok(BODY)] * 6) as server:
        pool = fetch.Pool(max_idle=2)
        requests = [fetch.Request(f"http://127.0.0.1:{server.port}/metrics/{i}", {}) for i in range(3)]
        for _ in range(2):
            responses = await asyncio.gather(*(pool.get(r, max_bytes=1 << 20) for r in requests))
            assert [r.body for r in responses] == [BODY] * 3
            assert pool.idle == 2
        pool.close()
    assert server.connections == 4  # three at first; one closed for the bound, so one new in the second round


async def test_the_pool_closes_connections_idle_too_long():
    async with Scripted([ok(BODY)] * 2) as server:
        pool = fetch.Pool(max_idle=4, idle_s=0.05)
        request = fetch.Request(f"http://127.0.0.1:{server.port}/metrics", {})
        await pool.get(request, max_bytes=1 << 20)
        pool.sweep()
        assert pool.idle == 1
        await asyncio.sleep(0.1)
        pool.sweep()
        assert pool.idle == 0
        await pool.get(request, max_bytes=1 << 20)
        pool.close()
    assert server.connections == 2


def test_only_plain_http_urls_without_credentials_are_supported():
    assert fetch.supported("http://10.0.0.1:9835/metrics")
    assert fetch.supported("http://gpu-host/metrics")
    assert not fetch.supported("https://gpu-host/metrics")
    assert not fetch.supported("http://user:pw@gpu-host/metrics")
    assert not fetch.supported("http://gpu-host:99999/metrics")
    assert not fetch.supported("unix:///run/x")


async def test_the_scraper_follows_a_redirect_through_aiohttp_and_reads_gzip_through_fetch(dsn):
    import psycopg
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from collector.ingest import MemoryAppendable
    from collector.scrape import Scraper
    from exporters.simfleet import SimServer
    from exporters.sim import HostSpec, SimFleet
    from fleetscope.registry import create_operator, register_node

    fleet = SimFleet(3, [HostSpec("a")])
    async with SimServer(fleet) as sim:
        app = web.Application()

        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPFound(sim.base_url + "/metrics/0")

        app.router.add_get("/old", moved)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                operator_id, _ = create_operator(conn, "ops")
                direct = register_node(conn, operator_id=operator_id, name="direct", interval_s=5,
                                       scrape_url=sim.base_url + "/metrics/0").node_id
                moved_id = register_node(conn, operator_id=operator_id, name="moved", interval_s=5,
                                         scrape_url=f"http://127.0.0.1:{port}/old").node_id
            memory = MemoryAppendable()
            async with Scraper(dsn, memory, collector_id="test", registry=CollectorRegistry(), time_scale=0.1,
                               refresh_s=3600) as scraper:
                await asyncio.sleep(1.6)
                assert scraper.targets[direct].request is not None
                assert scraper.targets[moved_id].request is None  # aiohttp's from the first redirect on
        finally:
            await runner.cleanup()
    by_node = {n: [b for b in memory.committed if b.node_id == n] for n in (direct, moved_id)}
    for node, batches in by_node.items():
        assert len(batches) >= 2 and all(b.ok and len(b.payload.samples) == 8 for b in batches), node
