"""/operator's actions with a real database and collector: register, channels, pause; wrong tokens change nothing.

The page's callbacks call these functions (dashboard/pages/operator.py); here
they run inside the dashboard's Flask app, as a callback request would, with
the collector's operator API on 127.0.0.1.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from fleetscope.registry import create_operator
from fleetscope.states import node_status
from tests.collector_process import WebhookSink, collector_process
from tests.dashboard_harness import explorer  # noqa: F401 - a fixture
from tests.fleetdata import Fleet


@pytest.fixture
def page_app(dsn, tmp_path, explorer):  # noqa: F811 - the fixture above
    from dashboard.app import create_app
    from dashboard.serve import COLLECTOR_URL_KEY

    with collector_process(dsn, tmp_path) as url:
        server = create_app(explorer).server
        server.config[COLLECTOR_URL_KEY] = url
        with server.test_request_context("/_dash-update-component", method="POST"):
            yield url


@pytest.fixture
def tokens(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return create_operator(conn, "acme")[1], create_operator(conn, "rival")[1]


def _rows(dsn: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_an_operator_registers_a_node_adds_tests_and_removes_a_channel_and_pauses_it(dsn, page_app, tokens):
    from dashboard.pages.operator import body, perform, state_label, view

    acme, _ = tokens
    ok, message, node_token = perform("register", acme, name="rig-1", scrape_url="")
    assert ok and "registered" in message and node_token.startswith("fsn_")
    (node_id, scrape_url), = _rows(dsn, "SELECT node_id, scrape_url FROM nodes WHERE name = 'rig-1'")
    assert scrape_url is None  # an empty field: the node pushes

    with WebhookSink() as hook:
        ok, message, _ = perform("channel-add", acme, kind="webhook", target=hook.url)
        assert ok, message
        (channel_id,), = _rows(dsn, "SELECT channel_id FROM alert_channels")
        ok, message, _ = perform("channel-test", acme, channel_id=channel_id)
        assert ok and "delivered" in message, message
        assert [b["event"] for b in hook.bodies] == ["test"]

    ok, message, _ = perform("pause", acme, node_id=node_id)
    assert ok and "paused" in message
    v = view(acme)
    assert [(n["name"], n["paused"], state_label(n)) for n in v["nodes"]] == [("rig-1", True, "new · paused")]
    assert "rig-1" in str(body(v))
    assert perform("resume", acme, node_id=node_id)[0]
    assert _rows(dsn, "SELECT paused FROM nodes") == [(False,)]

    ok, message, _ = perform("channel-remove", acme, channel_id=channel_id)
    assert ok and "removed" in message
    assert _rows(dsn, "SELECT count(*) FROM alert_channels") == [(0,)]


def test_a_wrong_or_another_operators_token_reads_and_changes_nothing(dsn, page_app, tokens):
    from dashboard.pages.operator import perform, view

    acme, rival = tokens
    perform("register", acme, name="rig-1")
    (node_id,), = _rows(dsn, "SELECT node_id FROM nodes")
    perform("channel-add", acme, kind="webhook", target="https://hooks.acme.example/a")
    (channel_id,), = _rows(dsn, "SELECT channel_id FROM alert_channels")
    before = _rows(dsn, "SELECT node_id, name, paused FROM nodes"), _rows(dsn, "SELECT * FROM alert_channels")

    for wrong in (None, "", "not-a-token", "fso_" + "A" * 43, "x" * 500):
        assert view(wrong) is None
        for action, fields in (("register", {"name": "sneaky"}), ("pause", {"node_id": node_id}),
                               ("channel-add", {"kind": "webhook", "target": "https://evil.example/"}),
                               ("channel-remove", {"channel_id": channel_id}),
                               ("channel-test", {"channel_id": channel_id})):
            ok, message, node_token = perform(action, wrong, **fields)
            assert not ok and message == "Sign in with a valid operator token first." and node_token is None

    # A valid token of another operator: its own (empty) view, and a 404 for acme's node and channel.
    assert view(rival)["nodes"] == [] and view(rival)["channels"] == []
    for action, fields in (("pause", {"node_id": node_id}), ("channel-remove", {"channel_id": channel_id}),
                           ("channel-test", {"channel_id": channel_id})):
        ok, message, _ = perform(action, rival, **fields)
        assert not ok and "HTTP 404" in message, (action, message)
    assert (_rows(dsn, "SELECT node_id, name, paused FROM nodes"), _rows(dsn, "SELECT * FROM alert_channels")) \
        == before

    # The collector's checks are the page's, and its sentences name the problem.
    ok, message, _ = perform("register", acme, name="x" * 201)
    assert not ok and "name" in message and "HTTP 400" in message
    ok, message, _ = perform("register", acme, name="rig-1")
    assert not ok and "you already have a node named 'rig-1'" in message


def test_the_view_is_read_at_the_current_time_as_the_alert_loop_judges_not_at_the_snapshot_tick(
        dsn, page_app, tokens, explorer):  # noqa: F811 - the fixture
    from dashboard.pages.operator import view
    from fleetscope.registry import operator_for_token

    acme, _ = tokens
    with psycopg.connect(dsn, autocommit=True) as conn:
        fleet = Fleet(conn, operator_for_token(conn, acme))
        node = fleet.node(name="rig-just-down", grace_s=45, registered_at=datetime.now(timezone.utc)
                          - timedelta(hours=1))
        last = datetime.now(timezone.utc) - timedelta(seconds=46)
        fleet.observe(node, last)
    before = datetime.now(timezone.utc)
    v = view(acme)
    as_of = datetime.fromisoformat(v["as_of"].replace("Z", "+00:00"))
    assert before <= as_of <= datetime.now(timezone.utc)  # now, not the explorer's 15 s tick
    assert as_of > explorer.tick()
    (shown,) = v["nodes"]
    assert shown["state"] == str(node_status(last_ok=last, interval_s=15, grace_s=45, at=as_of)) == "down"
