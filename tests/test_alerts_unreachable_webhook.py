"""An unreachable webhook blocks neither the other deliveries nor the collector; its attempts are recorded and retried.

A real collector with its alert loop; one operator has three channels: a
webhook that accepts the connection and never answers, one whose port
refuses connections, and a working one. The working one gets its message at
once, /healthz and registration answer while the hung one is in flight, and
every attempt at the broken ones is a row in alert_deliveries.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import psycopg

from collector.app import alerts_component, make_app
from fleetscope.registry import create_operator, register_node
from tests.alertharness import Receiver, Silent, add_channel, deliveries, now, observe, refused_url
from tests.collector_harness import bearer, collector_settings

TIMEOUT_S = 3.0


async def test_a_hung_and_a_refusing_webhook_do_not_hold_up_a_working_one_or_the_collector(
        dsn, tmp_path, aiohttp_client, aiohttp_server):
    receiver = Receiver()
    good = await aiohttp_server(receiver.app())
    silent = Silent()
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, operator_token = create_operator(conn, "acme")
        node_id = register_node(conn, operator_id=operator_id, name="rig-1", interval_s=5, grace_s=5).node_id
        # The broken channels first: they are claimed and started first.
        hung = add_channel(conn, operator_id, "webhook", silent.url)
        refused = add_channel(conn, operator_id, "slack", refused_url())
        add_channel(conn, operator_id, "webhook", str(good.make_url("/ok")))
        observe(conn, node_id, now() - timedelta(seconds=3))
    settings = collector_settings(dsn, tmp_path, alert_eval_s=0.2, alert_timeout_s=TIMEOUT_S,
                                  alert_retry_base_s=0.5, alert_max_attempts=3)
    client = await aiohttp_client(make_app(settings, components=[alerts_component]))
    try:
        bodies = await receiver.wait_for(1, timeout=6)
        assert [b["event"] for b in bodies] == ["node_down"]
        with psycopg.connect(dsn) as conn:
            # The hung channel's first attempt is still in flight: the working one did not wait for it.
            assert [a for a in deliveries(conn) if a["channel_id"] == hung] == []

        # The hung delivery is still in flight; the collector answers meanwhile.
        started = time.monotonic()
        assert (await client.get("/healthz")).status == 200
        response = await client.post("/api/v1/nodes", json={"name": "rig-2", "scrape_url": None, "interval_s": 15},
                                     headers=bearer(operator_token))
        assert response.status == 201
        assert time.monotonic() - started < TIMEOUT_S - 1  # answered while the hung send still waits

        # The hung one times out and is retried; the refused one fails fast and is retried.
        deadline = time.monotonic() + 3 * TIMEOUT_S + 5
        while time.monotonic() < deadline:
            with psycopg.connect(dsn) as conn:
                attempts = deliveries(conn)
            if len([a for a in attempts if a["channel_id"] == hung]) >= 2:
                break
            await asyncio.sleep(0.2)
        by_channel = {}
        for a in attempts:
            by_channel.setdefault(a["channel_id"], []).append(a)
        hung_attempts = by_channel[hung]
        assert [a["attempt"] for a in hung_attempts][:2] == [1, 2]
        assert all(not a["ok"] and "no answer within" in a["error"] for a in hung_attempts)
        assert by_channel[refused][0]["ok"] is False and "Connect" in by_channel[refused][0]["error"]
        assert [a["ok"] for a in attempts if a["channel_id"] not in (hung, refused)] == [True]
        assert len(receiver.bodies()) == 1  # delivered once, never again
    finally:
        await client.close()
        silent.close()


async def test_a_failing_receiver_is_retried_with_growing_waits_until_it_answers(
        dsn, tmp_path, aiohttp_client, aiohttp_server):
    receiver = Receiver(statuses=[503, 502, 200])
    server = await aiohttp_server(receiver.app())
    gone = Receiver(statuses=[404])
    gone_server = await aiohttp_server(gone.app())
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        node_id = register_node(conn, operator_id=operator_id, name="rig-1", interval_s=5, grace_s=5).node_id
        add_channel(conn, operator_id, "webhook", str(server.make_url("/flaky")))
        add_channel(conn, operator_id, "slack", str(gone_server.make_url("/revoked")))
        observe(conn, node_id, now() - timedelta(seconds=3))
    settings = collector_settings(dsn, tmp_path, alert_eval_s=0.2, alert_retry_base_s=0.4, alert_max_attempts=5)
    client = await aiohttp_client(make_app(settings, components=[alerts_component]))
    try:
        await receiver.wait_for(3, timeout=10)
        await asyncio.sleep(0.5)
    finally:
        await client.close()
    arrivals = [r.at for r in receiver.received]
    assert len(arrivals) == 3
    first_wait, second_wait = arrivals[1] - arrivals[0], arrivals[2] - arrivals[1]
    assert first_wait >= 0.3 and second_wait >= 0.7  # 0.4 s then 0.8 s, less 10 % jitter
    assert len(gone.received) == 1  # a 404 is final: not retried
    with psycopg.connect(dsn) as conn:
        rows = [(d["kind"], d["attempt"], d["ok"]) for d in deliveries(conn)]
        errors = {(d["kind"], d["attempt"]): d["error"] for d in deliveries(conn)}
        # The status only: a receiver's body is never kept (the operator reads these records).
        assert errors[("webhook", 1)] == "HTTP 503 Service Unavailable"
        assert errors[("slack", 1)] == "HTTP 404 Not Found" and errors[("webhook", 3)] is None
        assert sorted(rows) == [("slack", 1, False), ("webhook", 1, False), ("webhook", 2, False),
                                ("webhook", 3, True)]
        outcomes = dict(conn.execute("SELECT c.kind, o.delivered FROM alert_outbox o"
                                     " JOIN alert_channels c USING (channel_id)").fetchall())
        assert outcomes == {"webhook": True, "slack": False}
