"""A SIGTERM ends the collector within 10 s, having spooled what it holds, even with the database frozen.

Issue 15, item 3. A real collector process, with its scraper, maintenance,
alert and proof-round loops, on a real database; nodes push, the database is
frozen (SIGSTOP) while a round of pushes waits for its write, and the
collector gets SIGTERM. It must exit 0 within 10 s and answer the pushes it
had accepted (spooled, fsync'd). Once the database thaws and the collector is
started again, the spool is replayed: every push answered 204 is stored
exactly once. Before, the shutdown waited on the writer's write deadline and
probe, aiohttp's 10 s for requests, the loops' cancelled queries (psycopg waits
up to 10 s for a frozen server to cancel one) and threads blocked on the
database, well past 10 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp
import psycopg

from fleetscope.registry import create_operator, register_node
from tests.conftest import free_port
from tests.frozen_database import frozen
from tests.test_collector_no_loss_after_204 import _healthy, _push_round, _replayed

NODES = 4
INTERVAL_S = 5           # a node may push every 2.5 s
PUSH_SPACING_S = 2.6
# The bound, measured from the signal to the process's exit.
EXIT_WITHIN_S = 10.0
# How long the pushes of the frozen round wait in the writer before the signal.
HELD_S = 1.0


def _start(dsn: str, port: int, spool_dir, log_path) -> subprocess.Popen:
    # Every component runs (scraper, maintenance, alerts, proof rounds), each
    # with the database in its path, so every one's shutdown is bounded here.
    env = {**os.environ, "FLEETSCOPE_SPOOL_DIR": str(spool_dir), "FLEETSCOPE_DB_TIMEOUT_S": "1",
           "FLEETSCOPE_PUBLISH_INTERVAL_S": "0", "FLEETSCOPE_INTEGRITY_INTERVAL_S": "0",
           "FLEETSCOPE_ALERT_EVAL_S": "0.5"}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "collector.process", "--dsn", dsn, "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=log)


async def test_sigterm_with_the_database_frozen_exits_0_within_10_s_and_every_push_answered_204_is_stored_once(
        own_server, tmp_path):
    server, dsn = own_server
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        nodes = [register_node(conn, operator_id=operator_id, name=f"n{i}", interval_s=INTERVAL_S)
                 for i in range(NODES)]
    tokens = [n.node_token for n in nodes]
    port, spool, log_path = free_port(), tmp_path / "spool", tmp_path / "collector.log"
    base = f"http://127.0.0.1:{port}"
    collector = _start(dsn, port, spool, log_path)
    try:
        async with aiohttp.ClientSession() as session:
            await _healthy(session, base)
            before = await _push_round(session, base, tokens)  # the tokens are cached now
            await asyncio.sleep(PUSH_SPACING_S)
            with frozen(server):
                held = asyncio.create_task(_push_round(session, base, tokens))
                await asyncio.sleep(HELD_S)  # accepted, waiting for a write the frozen server never finishes
                assert not held.done(), "the pushes were answered without the database: nothing was held"
                signalled = time.monotonic()
                collector.send_signal(signal.SIGTERM)
                try:
                    code = await asyncio.to_thread(collector.wait, EXIT_WITHIN_S + 20)
                except subprocess.TimeoutExpired:
                    code = None
                took = time.monotonic() - signalled
                during = await held
        log = log_path.read_text(errors="replace")[-4000:]
        assert code == 0, f"exit status {code} after {took:.1f} s\n{log}"
        assert took < EXIT_WITHIN_S, f"the collector took {took:.1f} s to exit\n{log}"
        assert all(s == 204 for s in before)
        assert all(s == 204 for s in during), f"accepted pushes not answered 204: {during}\n{log}"
        assert list(spool.glob("*.group")), "nothing was spooled"

        collector = _start(dsn, port, spool, log_path)  # the database thawed: replays the spool
        await _replayed(spool, base)
    finally:
        if collector.poll() is None:
            collector.send_signal(signal.SIGTERM)
            collector.wait(timeout=30)
    accepted = {n.node_id: (before[i] == 204) + (during[i] == 204) for i, n in enumerate(nodes)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = dict(conn.execute("SELECT node_id, count(*) FROM observations WHERE source = 'push' "
                                   "GROUP BY node_id").fetchall())
    assert {node: stored.get(node, 0) for node in accepted} == accepted
