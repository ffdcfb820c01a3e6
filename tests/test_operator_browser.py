"""In headless Chromium: an operator signs in on /operator, registers a node and adds, tests and removes a channel.

The dashboard (gunicorn, as in production) sends the changes to a real
collector on 127.0.0.1, and the test message reaches a webhook on 127.0.0.1.
Needs Debian's chromium (.ci/run installs it); skips with the reason when it is absent.
"""

from __future__ import annotations

import psycopg
import pytest

from fleetscope.registry import create_operator
from tests.browser_harness import browser, needs_chromium, production_dashboard  # noqa: F401 - a fixture
from tests.collector_process import WebhookSink, collector_process

pytestmark = needs_chromium


@pytest.fixture
def stack(dsn, tmp_path):
    """The collector and the dashboard pointed at it; yields (dashboard URL, collector URL)."""
    with collector_process(dsn, tmp_path) as collector, \
            production_dashboard(dsn, tmp_path, "--collector-url", collector, tries=600) as url:
        yield url, collector


def test_an_operator_registers_a_node_and_adds_tests_and_removes_a_channel_in_the_browser(dsn, stack, browser,
                                                                                         tmp_path):
    url, collector = stack
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, token = create_operator(conn, "acme-gpu")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(90_000)  # a shared 2-core machine: generous, not flaky

    page.goto(f"{url}/operator", wait_until="networkidle")
    page.fill("#operator-token", "fso_" + "A" * 43)
    page.click("#operator-submit")
    page.wait_for_selector("#operator-error")
    assert not page.is_visible("#operator-actions")
    page.fill("#operator-token", token)
    page.click("#operator-submit")
    page.wait_for_selector("#operator-signed-in-name")
    assert page.inner_text("#operator-signed-in-name") == "acme-gpu"

    # Register a node: its token is shown once, and it appears in the grid.
    page.fill("#operator-node-name", "rig-7")
    page.click("#operator-register")
    page.wait_for_selector("#operator-new-node-token")
    node_token = page.inner_text("#operator-new-node-token").strip()
    assert node_token.startswith("fsn_")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT name FROM nodes").fetchall() == [("rig-7",)]
    page.wait_for_selector("#operator-nodes .ag-row [col-id=link] a")
    assert [s.strip() for s in page.locator("#operator-nodes .ag-row [col-id=link]").all_inner_texts()] == ["rig-7"]

    # Add a webhook channel on 127.0.0.1 and test it: the receiver gets the test message.
    with WebhookSink() as hook:
        page.fill("#operator-channel-target", hook.url)
        page.click("#operator-channel-add")
        page.wait_for_selector("#operator-channels .op-channel")
        assert hook.url in page.inner_text("#operator-channels")
        page.click("#operator-channels .op-channel button:has-text('Test')")
        page.wait_for_selector("#operator-ok:has-text('Test message delivered')")
        assert [b["event"] for b in hook.bodies] == ["test"]
        page.screenshot(path=str(tmp_path / "operator-1400.png"), full_page=True)

    # Pause the node: the grid says so.
    # dcc.Dropdown is not a <select>: a node is chosen by clicking.
    page.click("#operator-pause-node")
    page.get_by_role("option").filter(has_text="rig-7").first.click()
    page.click("#operator-pause")
    page.wait_for_selector("#operator-nodes .ag-row [col-id=state]:has-text('paused')")

    # The token stays in this tab's session: a reload does not ask for it again, and it is in no URL.
    page.reload(wait_until="networkidle")
    page.wait_for_selector("#operator-signed-in-name")
    assert token not in page.url and node_token not in page.url
    assert not page.is_visible("#operator-signin")
    assert page.evaluate("t => Object.values(sessionStorage).some(v => v.includes(t))", token)
    # The node token was shown once: not on the page after a reload.
    assert node_token not in page.content()

    page.click("#operator-channels .op-channel button:has-text('Remove')")
    page.wait_for_selector("#operator-ok:has-text('removed')")
    page.wait_for_selector("#operator-channels .note")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM alert_channels").fetchone()[0] == 0

    # At 400 px the operator's part of the page fits the screen: no element of it is wider.
    page.set_viewport_size({"width": 400, "height": 900})
    page.wait_for_timeout(300)
    page.screenshot(path=str(tmp_path / "operator-400.png"), full_page=True)
    too_wide = page.evaluate("""() => [...document.querySelectorAll('.operator-page *')]
        .filter(e => e.offsetParent !== null && !e.closest('.ag-root-wrapper')
                     && e.getBoundingClientRect().right > window.innerWidth + 1)
        .map(e => e.id || e.className || e.tagName).slice(0, 5)""")
    assert too_wide == []

    page.click("#operator-signout")
    page.wait_for_selector("#operator-token")
    assert not page.evaluate("t => Object.values(sessionStorage).some(v => v.includes(t))", token)
    context.close()
