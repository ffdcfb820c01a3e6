"""Each channel kind gets its own format: webhook JSON, Slack and Discord incoming webhooks, email over SMTP.

One node goes down for an operator with one channel of each kind; the real
deliverer sends to local receivers (aiohttp servers, an aiosmtpd server).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

from collector.alerts import Evaluator
from collector.delivery import Deliverer, SmtpSettings
from fleetscope.registry import create_operator, register_node
from tests.alertharness import Receiver, SmtpSink, add_channel, deliveries, now, observe


async def _node_goes_down(dsn: str, targets: dict[str, str]) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        node_id = register_node(conn, operator_id=operator_id, name="rig <7> & @everyone", interval_s=5,
                                grace_s=10).node_id
        for kind, target in targets.items():
            add_channel(conn, operator_id, kind, target)
        seen = now() - timedelta(seconds=60)
        observe(conn, node_id, seen)
    evaluator = Evaluator(flap_window=timedelta(hours=1))
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
        await evaluator.run_round(aconn, now=seen + timedelta(seconds=1))   # first known state: up
        result = await evaluator.run_round(aconn, now=seen + timedelta(seconds=30))
    assert result.messages == [(node_id, "node_down")] and result.queued == len(targets)
    return node_id


async def test_slack_discord_webhook_and_email_each_get_their_format(dsn, aiohttp_server):
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    with SmtpSink() as smtp_sink:
        node_id = await _node_goes_down(dsn, {
            "webhook": str(server.make_url("/generic")),
            "slack": str(server.make_url("/services/T000/B000/XXXX")),
            "discord": str(server.make_url("/api/webhooks/1/abc")),
            "email": "oncall@acme.example",
        })
        smtp = SmtpSettings(host="127.0.0.1", port=smtp_sink.port, security="none",
                            sender="fleetscope@noc.example", user=None, password=None)
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True})
        await pool.open()
        try:
            async with Deliverer(pool, timeout_s=5, max_attempts=2, retry_base_s=0.1, smtp=smtp) as deliverer:
                deliverer.wake()
                await receiver.wait_for(3, timeout=5)
                for _ in range(100):
                    if smtp_sink.messages:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await pool.close()

        generic = receiver.bodies("/generic")
        assert len(generic) == 1
        assert generic[0]["event"] == "node_down" and generic[0]["node_id"] == node_id
        assert generic[0]["name"] == "rig <7> & @everyone" and generic[0]["since"]

        slack = receiver.bodies("/services/T000/B000/XXXX")
        assert len(slack) == 1
        assert "rig <7> & @everyone" in slack[0]["text"] and "DOWN" in slack[0]["text"]
        assert slack[0]["attachments"][0]["color"] == "#d92d20"

        discord = receiver.bodies("/api/webhooks/1/abc")
        assert len(discord) == 1
        assert "DOWN" in discord[0]["content"]
        assert discord[0]["embeds"][0]["color"] == 0xD92D20
        assert discord[0]["allowed_mentions"] == {"parse": []}  # the node's name pings nobody

        assert len(smtp_sink.messages) == 1
        sender, recipients, email = smtp_sink.messages[0]
        assert (sender, recipients) == ("fleetscope@noc.example", ["oncall@acme.example"])
        assert "DOWN" in email["Subject"] and email["X-Fleetscope-Event"] == "node_down"
        assert f"node {node_id}" in email.get_payload()

    with psycopg.connect(dsn) as conn:
        assert sorted((d["kind"], d["ok"], d["attempt"]) for d in deliveries(conn)) == [
            ("discord", True, 1), ("email", True, 1), ("slack", True, 1), ("webhook", True, 1)]


async def test_email_without_an_smtp_server_is_recorded_as_failed_with_the_setting_to_fix(dsn):
    await _node_goes_down(dsn, {"email": "oncall@acme.example"})
    smtp = SmtpSettings(host=None, port=587, security="starttls", sender=None, user=None, password=None)
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False, kwargs={"autocommit": True})
    await pool.open()
    try:
        async with Deliverer(pool, timeout_s=5, max_attempts=5, retry_base_s=0.1, smtp=smtp) as deliverer:
            for _ in range(100):
                await deliverer.dispatch()
                with psycopg.connect(dsn) as conn:
                    if deliveries(conn):
                        break
                await asyncio.sleep(0.05)
    finally:
        await pool.close()
    with psycopg.connect(dsn) as conn:
        [attempt] = deliveries(conn)
        assert not attempt["ok"] and "FLEETSCOPE_SMTP_HOST" in attempt["error"]
        assert conn.execute("SELECT delivered FROM alert_outbox").fetchone()[0] is False  # final: not retried
