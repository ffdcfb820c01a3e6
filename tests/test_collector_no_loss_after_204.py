"""A 204 means the push is safe: in the database or in the fsync'd spool (issue 15, item 2).

The fault test of the issue: a real collector process on a real database;
the database is frozen (SIGSTOP), nodes keep pushing, the collector is killed
(SIGKILL) while the database is still frozen, the database thaws and the
collector is started again. Every push that was answered 204 is then stored
exactly once. Before, pushes were answered 204 from memory while the
database was frozen, and the kill lost them all.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import psycopg

from fleetscope.registry import create_operator, register_node
from tests.collector_harness import FLEET_PROM, TEXT_TYPE
from tests.collector_process import ingest_only_collector
from tests.conftest import free_port
from tests.frozen_database import frozen

NODES = 4
INTERVAL_S = 5           # a node may push every 2.5 s
PUSH_SPACING_S = 2.6


async def _replayed(spool, base: str, within_s: float = 30.0) -> None:
    """A restarted collector is healthy and has replayed its spool (every group file gone)."""
    async with aiohttp.ClientSession() as session:
        await _healthy(session, base)
    deadline = time.monotonic() + within_s
    while list(spool.glob("*.group")) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not list(spool.glob("*.group")), "the spool was not replayed"


async def _healthy(session: aiohttp.ClientSession, base: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("the collector did not become healthy")


async def _push_round(session: aiohttp.ClientSession, base: str, tokens: list[str]) -> list[int]:
    async def one(token: str) -> int:
        try:
            async with session.post(f"{base}/api/v1/push", data=FLEET_PROM,
                                    headers={"Authorization": f"Bearer {token}", "Content-Type": TEXT_TYPE},
                                    timeout=aiohttp.ClientTimeout(total=40)) as response:
                return response.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return 0  # no answer: not promised
    return list(await asyncio.gather(*(one(t) for t in tokens)))


async def test_every_push_answered_204_is_stored_exactly_once_across_a_freeze_and_a_kill(own_server, tmp_path):
    server, dsn = own_server
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        nodes = [register_node(conn, operator_id=operator_id, name=f"n{i}", interval_s=INTERVAL_S)
                 for i in range(NODES)]
    tokens = [n.node_token for n in nodes]
    port, spool = free_port(), tmp_path / "spool"
    base = f"http://127.0.0.1:{port}"
    accepted = {n.node_id: 0 for n in nodes}
    collector = ingest_only_collector(dsn, port, spool)
    try:
        async with aiohttp.ClientSession() as session:
            await _healthy(session, base)
            rounds = [await _push_round(session, base, tokens)]  # the tokens are cached now
            with frozen(server):
                for _ in range(2):
                    await asyncio.sleep(PUSH_SPACING_S)
                    rounds.append(await _push_round(session, base, tokens))
                collector.send_signal(signal.SIGKILL)
                collector.wait(timeout=10)
        for statuses in rounds:
            for node, status in zip(nodes, statuses):
                accepted[node.node_id] += status == 204
        assert all(s == 204 for s in rounds[0])
        assert sum(s == 204 for r in rounds[1:] for s in r) > 0, "no push was accepted while frozen"
        collector = ingest_only_collector(dsn, port, spool)  # replays the spool
        await _replayed(spool, base)
    finally:
        if collector.poll() is None:
            collector.send_signal(signal.SIGTERM)
            collector.wait(timeout=30)
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = dict(conn.execute("SELECT node_id, count(*) FROM observations WHERE source = 'push' "
                                   "GROUP BY node_id").fetchall())
    assert {node: stored.get(node, 0) for node in accepted} == accepted
