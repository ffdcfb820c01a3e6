"""``run`` serves the collector on a real port until stopped, with its components beside it."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from collector.app import APPENDABLE, METRICS, POOL
from collector.process import main, run
from collector.ingest import MemoryAppendable
from tests.conftest import free_port
from tests.collector_harness import collector_settings


async def test_run_serves_http_until_stopped_and_runs_components_inside_the_apps_lifetime(dsn, tmp_path):
    port = free_port()
    settings = collector_settings(dsn, tmp_path, port=port)
    storage = MemoryAppendable()
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def component(app):
        # A component sees the same storage, pool and registry as the HTTP side.
        assert app[APPENDABLE] is storage and app[POOL] is not None and app[METRICS].registry is not None
        seen.append("started")
        yield
        seen.append("stopped")

    stop = asyncio.Event()
    server = asyncio.create_task(run(settings, components=[component], appendable=storage, stop=stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the collector never listened")
        assert seen == ["started"]
    finally:
        stop.set()
        await asyncio.wait_for(server, 15)
    assert seen == ["started", "stopped"]


async def test_run_refuses_to_start_on_a_database_without_the_schema(pg_server, tmp_path):
    settings = collector_settings(pg_server.admin_dsn, tmp_path, port=free_port())
    from fleetscope.errors import FleetscopeError

    with pytest.raises(FleetscopeError, match="fleetscope db init"):
        await run(settings, components=[], appendable=MemoryAppendable())


def test_main_stops_with_a_message_naming_a_bad_setting(capsys):
    assert main(["--dsn", "postgresql://x@127.0.0.1:1/x", "--shard", "2/2"]) == 2
    assert "--shard" in capsys.readouterr().err
