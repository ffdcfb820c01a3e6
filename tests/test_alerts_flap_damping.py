"""A node flapping every minute sends at most MAX_MESSAGES_PER_WINDOW messages per damping window.

The last message always tells its current state.

Two hours of a node that is up for a minute and silent for a minute,
evaluated every 15 s of simulated time (the evaluator takes ``now``), on a
real database; then every queued message is delivered to a real webhook
receiver and counted there.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg

from collector.alerts import MAX_MESSAGES_PER_WINDOW, Damping, Evaluator, damp
from collector.delivery import Deliverer, SmtpSettings
from fleetscope.registry import create_operator, register_node
from tests.alertharness import Receiver, add_channel, observe
from tests.fleetdata import T0

WINDOW = timedelta(hours=1)
STEP = timedelta(seconds=15)


def test_the_rule_sends_the_first_messages_of_a_window_and_mutes_the_rest():
    state = Damping(None, 0, 0)
    sent = []
    for minute in range(10):
        decision = damp(state, now=T0 + timedelta(minutes=minute), window=WINDOW)
        sent.append(decision.send)
        state = Damping(decision.window_started_at, decision.window_messages, 0)
    assert sent == [True] * MAX_MESSAGES_PER_WINDOW + [False] * (10 - MAX_MESSAGES_PER_WINDOW)
    assert decision.muted_until == T0 + WINDOW
    assert damp(state, now=T0 + WINDOW, window=WINDOW).send  # a new window


async def test_a_node_flapping_every_minute_sends_no_more_than_the_documented_number_per_window(
        dsn, aiohttp_server):
    from psycopg_pool import AsyncConnectionPool

    receiver = Receiver()
    hook = await aiohttp_server(receiver.app())
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        node_id = register_node(conn, operator_id=operator_id, name="flappy", interval_s=15, grace_s=30,
                                registered_at=T0 - timedelta(days=1)).node_id
        add_channel(conn, operator_id, "webhook", str(hook.make_url("/hook")))

    evaluator = Evaluator(flap_window=WINDOW)
    queued: list[tuple[object, str]] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            t = T0
            while t < T0 + timedelta(hours=2, minutes=30):
                minute = int((t - T0).total_seconds()) // 60
                flapping = t < T0 + timedelta(hours=2)
                if minute % 2 == 0 or not flapping:  # up on even minutes, silent on odd; steady after two hours
                    observe(conn, node_id, t)
                result = await evaluator.run_round(aconn, now=t)
                queued += [(t, event) for _node, event in result.messages]
                t += STEP

    changes_per_hour = 60  # down and up once every two minutes
    assert changes_per_hour > MAX_MESSAGES_PER_WINDOW
    # The windows open at the first message and last an hour; none holds more than the quota.
    window_start = None
    counts: list[int] = []
    for when, _event in queued:
        if window_start is None or when >= window_start + WINDOW:
            window_start, counts = when, [*counts, 0]
        counts[-1] += 1
    assert counts and max(counts) <= MAX_MESSAGES_PER_WINDOW, counts
    # Quiet once it is steady, and the last message says what is true: up.
    assert queued[-1][1] == "node_up"
    assert len(queued) <= MAX_MESSAGES_PER_WINDOW * 3 + 1

    pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True})
    await pool.open()
    try:
        smtp = SmtpSettings(host=None, port=25, security="none", sender=None, user=None, password=None)
        async with Deliverer(pool, timeout_s=5, max_attempts=3, retry_base_s=0.1, smtp=smtp) as deliverer:
            deliverer.wake()
            bodies = await receiver.wait_for(len(queued), timeout=10)
    finally:
        await pool.close()
    assert [b["event"] for b in bodies] == [event for _when, event in queued]
    # The first message after a muted stretch says how many changes were not sent.
    catch_ups = [b for b in bodies if b["flapping"]]
    assert catch_ups and all(b["suppressed_changes"] > 0 for b in catch_ups)
    assert sum(b["suppressed_changes"] for b in bodies) + len(bodies) <= 2 * changes_per_hour * 2


async def test_a_node_that_dies_while_muted_is_reported_down_when_the_window_ends(any_mode_dsn):
    dsn = any_mode_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        node_id = register_node(conn, operator_id=operator_id, name="dies", interval_s=15, grace_s=30,
                                registered_at=T0 - timedelta(days=1)).node_id
        add_channel(conn, operator_id, "webhook", "https://hooks.acme.example/fleet")
    evaluator = Evaluator(flap_window=WINDOW)
    queued = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            t = T0
            while t < T0 + timedelta(minutes=90):
                minute = int((t - T0).total_seconds()) // 60
                if minute < 12 and minute % 2 == 0:  # flaps for 12 minutes, then dead
                    observe(conn, node_id, t)
                result = await evaluator.run_round(aconn, now=t)
                queued += [(t, event) for _node, event in result.messages]
                t += STEP
            payloads = [r[0] for r in conn.execute("SELECT payload FROM alert_outbox ORDER BY outbox_id")]
    events = [event for _when, event in queued]
    assert events == ["node_down", "node_up"] * (MAX_MESSAGES_PER_WINDOW // 2) + ["node_down"]
    first, last = queued[0][0], queued[-1][0]
    assert last == first + WINDOW  # the catch-up, as the window closes
    assert payloads[-1]["flapping"] and payloads[-1]["suppressed_changes"] > 0
