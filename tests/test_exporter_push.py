"""Push mode against a real aiohttp receiver on 127.0.0.1, outages included."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from pathlib import Path

from aiohttp import web
from prometheus_client.metrics_core import GaugeMetricFamily

from exporters.gpu_collector import GpuCollector
from exporters.push import Pusher
from exporters.sim import HostSpec, SimFleet
from exporters.spool import Spool
from tests.fixtures.exporter import support

TOKEN = "node-token-123"


class Sequence:
    """Numbers each payload the pusher renders (scrapes of /metrics don't count)."""

    def __init__(self) -> None:
        self.n = 0

    def describe(self):
        return ()

    def collect(self):
        if threading.current_thread().name == "fleetscope-push":
            self.n += 1
        yield GaugeMetricFamily("test_payload_sequence", "payload number", self.n)


class Receiver:
    """The collector's push endpoint, with a switch for outages."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | 503 | 429 | 400
        self.requests: list[dict] = []  # every request, whatever the answer
        self.accepted: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        # aiohttp inflates Content-Encoding: gzip by itself; the compressed
        # size is still in Content-Length.
        raw = await request.read()
        body = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
        families = support.parse(body)
        entry = {
            "headers": dict(request.headers),
            "inflated": len(raw),
            "families": families,
            "seq": families["test_payload_sequence"][0].value,
        }
        self.requests.append(entry)
        if self.mode == "503":
            return web.Response(status=503, text="down for maintenance")
        if self.mode == "429":
            return web.Response(status=429, headers={"Retry-After": "0"})
        if self.mode == "400":
            return web.Response(status=400, text="unparsable")
        self.accepted.append(entry)
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/push", self.handle)
        return app


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def make_pusher(url: str, tmp_path: Path, **kwargs):
    fleet = SimFleet(3, [HostSpec("nat-host", "healthy", n_gpus=2, hired=True)])
    sequence = Sequence()
    registry = support.registry_of(GpuCollector(fleet.source(0), cache_seconds=0), sequence)
    spool = Spool(tmp_path / "spool", max_files=kwargs.pop("max_files", 1000))
    pusher = Pusher(
        url,
        TOKEN,
        registry=registry,
        spool=spool,
        interval=kwargs.pop("interval", 0.05),
        backoff_base=0.02,
        backoff_max=0.2,
        timeout=2.0,
        **kwargs,
    )
    registry.register(pusher)
    return pusher, registry, sequence


async def test_it_pushes_gzipped_prometheus_text_with_the_bearer_token(aiohttp_server, tmp_path):
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    pusher, _, _ = make_pusher(str(server.make_url("/api/v1/push")), tmp_path)
    pusher.start()
    try:
        await until(lambda: len(receiver.accepted) >= 3)
    finally:
        await asyncio.to_thread(pusher.stop, 5)
    first = receiver.accepted[0]
    assert first["headers"]["Content-Encoding"] == "gzip"
    assert int(first["headers"]["Content-Length"]) < first["inflated"] / 3
    assert first["headers"]["Content-Type"].startswith("text/plain; version=0.0.4")
    assert first["headers"]["Authorization"] == f"Bearer {TOKEN}"
    families = first["families"]
    assert len(families["DCGM_FI_DEV_GPU_UTIL"]) == 2
    assert support.value(families, "fleet_exporter_last_collect_success") == 1
    # Each sample says when it was measured, for replays after an outage.
    stamps = {s.timestamp for samples in families.values() for s in samples}
    assert len(stamps) == 1 and abs(stamps.pop() - time.time()) < 60
    assert [r["seq"] for r in receiver.accepted[:3]] == [1, 2, 3]


async def test_an_outage_loses_nothing_keeps_order_and_metrics_stay_served(
    aiohttp_server, tmp_path
):
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    pusher, registry, sequence = make_pusher(str(server.make_url("/api/v1/push")), tmp_path)
    with support.serve(registry) as metrics_url:
        pusher.start()
        try:
            await until(lambda: len(receiver.accepted) >= 2)
            receiver.mode = "503"
            await asyncio.sleep(0.4)
            receiver.mode = "429"
            await asyncio.sleep(0.2)
            # /metrics answers during the outage, and shows the backlog.
            started = time.monotonic()
            during = support.parse(await asyncio.to_thread(support.fetch, metrics_url))
            assert time.monotonic() - started < 1.0
            assert len(during["DCGM_FI_DEV_GPU_UTIL"]) == 2
            assert support.value(during, "fleet_exporter_push_spool_payloads") >= 3
            assert support.value(during, "fleet_exporter_push_errors_total") >= 2
            receiver.mode = "ok"
            produced = sequence.n
            await until(lambda: receiver.accepted and receiver.accepted[-1]["seq"] > produced)
        finally:
            await asyncio.to_thread(pusher.stop, 5)
    seqs = [r["seq"] for r in receiver.accepted]
    assert seqs == list(range(1, len(seqs) + 1))  # every payload, once, in order
    assert len(seqs) + len(pusher.spool) == sequence.n
    refused = {r["seq"] for r in receiver.requests} - set(seqs)
    assert len(receiver.requests) > len(seqs) and not refused  # retried until accepted
    stamps = [r["families"]["test_payload_sequence"][0].timestamp for r in receiver.accepted]
    assert stamps == sorted(stamps)
    assert pusher.rejected == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_receiver_that_is_down_gets_the_backlog_when_it_comes_back(tmp_path):
    receiver = Receiver()
    port = _free_port()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(receiver.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = await start()
    pusher, _, sequence = make_pusher(f"http://127.0.0.1:{port}/api/v1/push", tmp_path)
    pusher.start()
    try:
        await until(lambda: len(receiver.accepted) >= 2)
        await runner.cleanup()  # connection refused from now on
        await asyncio.sleep(0.5)
        assert len(pusher.spool) >= 3
        runner = await start()
        produced = sequence.n
        await until(lambda: receiver.accepted and receiver.accepted[-1]["seq"] > produced)
    finally:
        await asyncio.to_thread(pusher.stop, 5)
        await runner.cleanup()
    seqs = [r["seq"] for r in receiver.accepted]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_400_is_dropped_and_not_retried(aiohttp_server, tmp_path):
    receiver = Receiver()
    receiver.mode = "400"
    server = await aiohttp_server(receiver.app())
    pusher, registry, sequence = make_pusher(str(server.make_url("/api/v1/push")), tmp_path)
    pusher.start()
    try:
        await until(lambda: len(receiver.requests) >= 8)
    finally:
        await asyncio.to_thread(pusher.stop, 5)
    seqs = [r["seq"] for r in receiver.requests]
    assert seqs == list(range(1, len(seqs) + 1))  # each payload tried exactly once
    assert pusher.rejected == len(seqs)
    assert len(pusher.spool) <= 1  # at most the one rendered as we stopped
    m = support.parse((await asyncio.to_thread(_render, registry)))
    assert support.value(m, "fleet_exporter_push_rejected_total") == len(seqs)


def _render(registry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_a_full_spool_drops_the_oldest_payloads_and_counts_them(tmp_path):
    spool = Spool(tmp_path, max_files=3)
    for i in range(5):
        spool.put(f"payload {i}".encode())
    assert spool.dropped == 2
    kept = []
    while (head := spool.peek()) is not None:
        kept.append(head[1])
        spool.remove(head[0])
    assert kept == [b"payload 2", b"payload 3", b"payload 4"]


def test_a_spool_is_bounded_in_bytes_too(tmp_path):
    spool = Spool(tmp_path, max_files=100, max_bytes=25)
    for i in range(5):
        spool.put(b"0123456789" + bytes([i]))  # 11 bytes each
    assert len(spool) == 2 and spool.bytes == 22 and spool.dropped == 3


def test_a_spool_keeps_its_order_across_restarts(tmp_path):
    first = Spool(tmp_path)
    first.put(b"a")
    first.put(b"b")
    (tmp_path / "0000000000000099.tmp").write_bytes(b"half a payl")  # crash mid-write
    second = Spool(tmp_path)
    second.put(b"c")
    got = []
    while (head := second.peek()) is not None:
        got.append(head[1])
        second.remove(head[0])
    assert got == [b"a", b"b", b"c"]
    assert not list(tmp_path.glob("*.tmp"))
