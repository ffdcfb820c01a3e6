"""Operators' URLs never make the collector connect to internal addresses (issue 15, item 1).

Refused at registration (400 with a reason), again at connection time after
DNS resolution, and on every redirect, unless FLEETSCOPE_ALLOW_PRIVATE_TARGETS
is set (the other tests set it). All traffic here stays on 127.0.0.1: names
are resolved by a test resolver, and the refused addresses that a test could
reach are loopback ones with a listener that counts connections, so a
failure shows as a connection made, never as traffic leaving the machine.
"""

from __future__ import annotations

import asyncio

import aiohttp
import psycopg
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from collector.addresses import AddressPolicy, GuardedConnector, RefusedAddress, address_refusal
from collector.app import make_app
from collector.ingest import MemoryAppendable
from collector.scrape import Scraper
from fleetscope.registry import create_operator, register_node
from tests.collector_harness import bearer, collector_settings, rejects
from tests.conftest import free_port

REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://10.0.0.5:9835/metrics",
    "http://172.16.3.4/metrics",
    "http://192.168.1.10:9835/metrics",
    "http://[::1]:9835/metrics",
    "http://user:pass@127.0.0.1:5432/",
    "http://localhost:9300/metrics",
    "http://node.localhost/metrics",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://2130706433/",           # 127.0.0.1 as one number
    "http://127.1/",                # 127.0.0.1, short form
    "http://0x7f.0.0.1/",
    "http://[::ffff:127.0.0.1]/",   # IPv4-mapped loopback
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://0.0.0.0:9300/",
    "http://100.64.0.1/",           # shared address space (carrier-grade NAT)
]


@pytest.fixture
async def strict_client(aiohttp_client, dsn, tmp_path):
    """A collector that refuses private targets, as in production."""
    test_client = await aiohttp_client(make_app(collector_settings(dsn, tmp_path, allow_private_targets=False),
                                                appendable=MemoryAppendable()))
    yield test_client
    await test_client.close()


class Listener:
    """A TCP listener on a loopback address that counts the connections made to it."""

    def __init__(self, host: str) -> None:
        self.host, self.port, self.connections = host, free_port(), 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        def accepted(reader, writer):
            self.connections += 1
            writer.close()
        self._server = await asyncio.start_server(accepted, self.host, self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()


def names(mapping: dict[str, list[str]]):
    """A resolver that answers from ``mapping`` (and never asks DNS)."""
    async def resolve(host: str, port: int) -> list[str]:
        return mapping[host]
    return resolve


def _node(dsn: str, url: str) -> int:
    """A node with ``url``, written straight to the database (as if DNS had pointed elsewhere at registration)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "ops")
        return register_node(conn, operator_id=operator_id, name="n", scrape_url=url).node_id


async def _scrape_once(dsn: str, node: int, policy: AddressPolicy):
    async with Scraper(dsn, MemoryAppendable(), registry=CollectorRegistry(), refresh_s=3600,
                       addresses=policy) as scraper:
        return await scraper.attempt(scraper.targets[node])


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_registering_an_internal_scrape_url_is_refused_with_a_reason(strict_client, operator_token, url):
    response = await strict_client.post("/api/v1/nodes", json={"name": "n", "scrape_url": url, "interval_s": 15},
                                        headers=bearer(operator_token))
    assert response.status == 400
    body = await response.json()
    assert body["reason"] == "refused_target" and "scrape_url" in body["error"]
    assert await rejects(strict_client, "refused_target") == 1


@pytest.mark.parametrize("url", REFUSED_URLS[:6])
async def test_an_internal_webhook_is_refused_with_a_reason(strict_client, operator_token, url):
    response = await strict_client.post("/api/v1/channels", json={"kind": "webhook", "target": url},
                                        headers=bearer(operator_token))
    assert response.status == 400
    assert (await response.json())["reason"] == "refused_target"


async def test_public_targets_are_still_registered(strict_client, operator_token):
    # Registration checks the URL alone (no DNS) and this app runs no scraper,
    # so nothing here is ever connected to: they are only registered.
    for i, url in enumerate(["http://gpu-rig-42.example.com:9835/metrics", "https://8.8.8.8/metrics",
                             "http://[2001:4860:4860::8888]:9835/metrics"]):
        response = await strict_client.post("/api/v1/nodes", json={"name": f"n{i}", "scrape_url": url},
                                            headers=bearer(operator_token))
        assert response.status == 201, await response.text()


async def test_private_targets_are_registered_when_allowed(client, operator_token):
    response = await client.post("/api/v1/nodes", json={"name": "lab", "scrape_url": "http://10.0.0.5:9835/metrics"},
                                 headers=bearer(operator_token))
    assert response.status == 201


@pytest.mark.parametrize("scheme_prefix", ["http://", "http://user:secret@"])  # collector/fetch.py, then aiohttp
async def test_a_name_that_resolves_to_an_internal_address_is_not_connected_to(dsn, scheme_prefix):
    async with Listener("127.0.0.1") as internal:
        node = _node(dsn, f"{scheme_prefix}rebound.test:{internal.port}/metrics")
        policy = AddressPolicy(resolve=names({"rebound.test": ["127.0.0.1"]}))
        batch = await _scrape_once(dsn, node, policy)
    assert not batch.ok
    assert batch.error == "refused: 127.0.0.1 is a loopback address"
    assert internal.connections == 0


async def test_a_redirect_to_an_internal_address_is_not_followed(dsn):
    """The first hop (127.0.0.1, exempted as a stand-in for a public host) redirects to 127.0.0.2."""
    async with Listener("127.0.0.2") as internal:
        async def redirect(request):
            raise web.HTTPFound(f"http://127.0.0.2:{internal.port}/latest/meta-data/")
        app = web.Application()
        app.router.add_get("/metrics", redirect)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            node = _node(dsn, f"http://exporter.test:{port}/metrics")
            policy = AddressPolicy(resolve=names({"exporter.test": ["127.0.0.1"]}), exempt=["127.0.0.1"])
            batch = await _scrape_once(dsn, node, policy)
        finally:
            await runner.cleanup()
    assert not batch.ok
    assert batch.error == "refused: 127.0.0.2 is a loopback address"
    assert internal.connections == 0


async def test_the_webhook_connector_refuses_internal_addresses_after_resolution():
    """The alert deliverer's session uses GuardedConnector: a webhook to a rebound name sends nothing."""
    async with Listener("127.0.0.1") as internal:
        policy = AddressPolicy(resolve=names({"hooks.test": ["127.0.0.1"]}))
        async with aiohttp.ClientSession(connector=GuardedConnector(policy)) as session:
            for url in (f"http://hooks.test:{internal.port}/", f"http://127.0.0.1:{internal.port}/"):
                with pytest.raises(aiohttp.ClientConnectorError) as caught:
                    await session.post(url, json={"event": "node_down"})
                assert isinstance(caught.value.os_error, RefusedAddress)
    assert internal.connections == 0


async def test_a_foreign_page_is_not_stored_beyond_a_short_reason(dsn):
    secret = "AKIA-internal-admin-password-hunter2"

    async def page(request):
        return web.Response(text=f"<html><body>{secret} " + "x" * 300 + "</body></html>", content_type="text/html")
    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        node = _node(dsn, f"http://127.0.0.1:{port}/metrics")
        batch = await _scrape_once(dsn, node, AddressPolicy(allow_private=True))
    finally:
        await runner.cleanup()
    assert not batch.ok
    assert secret not in batch.error and "html" not in batch.error
    assert batch.error == "unparsable: unparsable"


@pytest.mark.parametrize(("address", "why"), [
    ("169.254.169.254", "cloud metadata"), ("10.1.2.3", "private"), ("::1", "loopback"),
    ("fe80::1", "link-local"), ("127.0.0.53", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "not a public"),
])
def test_internal_addresses_are_refused_by_name(address, why):
    assert why in address_refusal(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(address) is None
