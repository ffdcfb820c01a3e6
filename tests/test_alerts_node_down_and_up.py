"""A node that stops gets exactly one node_down within grace + one interval, and one node_up when it returns.

A real collector (its production writer, alert loop and deliverer, evaluating
every 0.2 s), a real PostgreSQL, and a webhook receiver on 127.0.0.1. The node
is registered through the API with a 5 s interval and a 5 s grace (the
shortest the schema allows) and pushes our exporter's payload every 2.5 s
(the collector's push spacing for that interval).
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from collector.app import alerts_component, make_app
from fleetscope.registry import create_operator
from tests.alertharness import Receiver, add_channel
from tests.collector_harness import collector_settings, push, register

INTERVAL_S = 5
GRACE_S = 5
PUSH_EVERY_S = 2.5
CONTRACT_FIELDS = {"event", "node_id", "name", "since"}


async def test_a_stopped_node_sends_one_node_down_and_its_return_one_node_up(
        dsn, tmp_path, aiohttp_client, aiohttp_server):
    receiver = Receiver()
    hook = await aiohttp_server(receiver.app())
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, operator_token = create_operator(conn, "acme")
        add_channel(conn, operator_id, "webhook", str(hook.make_url("/fleet")))
    settings = collector_settings(dsn, tmp_path, alert_eval_s=0.2, alert_retry_base_s=0.1)
    client = await aiohttp_client(make_app(settings, components=[alerts_component]))
    try:
        node_id, node_token = await register(client, operator_token, "rig-7", interval_s=INTERVAL_S, grace_s=GRACE_S)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # The node reports for a few seconds, then stops.
            for _ in range(3):
                response = await push(client, node_token)
                assert response.status == 204, await response.text()
                await asyncio.sleep(PUSH_EVERY_S)
            response = await push(client, node_token)
            assert response.status == 204
            stopped = time.monotonic()
            assert receiver.bodies() == []  # reporting: nothing to say

            downs = await receiver.wait_for(1, timeout=GRACE_S + INTERVAL_S)
            assert len(downs) == 1, "no node_down within grace + one interval"
            waited = receiver.received[0].at - stopped
            assert GRACE_S - 1.0 <= waited <= GRACE_S + INTERVAL_S
            down = downs[0]
            assert CONTRACT_FIELDS <= set(down)
            assert (down["event"], down["node_id"], down["name"], down["status"]) == ("node_down", node_id,
                                                                                      "rig-7", "down")
            assert down["since"].endswith("Z") and down["grace_s"] == GRACE_S

            await asyncio.sleep(1.0)  # five more rounds: still one message
            assert len(receiver.bodies()) == 1

            assert (await push(client, node_token)).status == 204  # it returns
            ups = await receiver.wait_for(2, timeout=3)
            assert [b["event"] for b in ups] == ["node_down", "node_up"]
            assert ups[1]["node_id"] == node_id and ups[1]["since"] > down["since"]
            await asyncio.sleep(PUSH_EVERY_S)
            assert (await push(client, node_token)).status == 204
            await asyncio.sleep(1.0)
            assert [b["event"] for b in receiver.bodies()] == ["node_down", "node_up"]
            rows = conn.execute("SELECT event, attempt, ok FROM alert_deliveries ORDER BY delivery_id").fetchall()
            assert rows == [("node_down", 1, True), ("node_up", 1, True)]
            status = conn.execute("SELECT status, notified FROM alert_state WHERE node_id = %s",
                                  (node_id,)).fetchone()
            assert status == ("up", "node_up")
    finally:
        await client.close()
