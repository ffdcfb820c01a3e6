"""In headless Chromium, on the production server (gunicorn, two workers): the pages show the API's numbers.

Needs Debian's chromium (.ci/run installs it); skips with the reason when it is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.dashboard_harness import get

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
HEADLINES = [("nodes", k) for k in ("registered", "online", "offline")] + [
    ("gpus", k) for k in ("registered", "online", "offline", "hired", "hired_offline", "idle", "verified",
                          "unverified", "flagged")] + [
    ("gpu_hours", "last_24h"), ("gpu_hours", "total"), ("revenue_usd", "last_24h"), ("revenue_usd", "total")]


@pytest.fixture
def production_url(dsn, live_fleet, tmp_path):
    port = free_port()
    log = open(tmp_path / "dashboard.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetscope.cli", "dashboard", "--dsn", dsn, "--port", str(port), "--workers", "2",
         "--cache-dir", str(tmp_path / "cache")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"the dashboard exited: {(tmp_path / 'dashboard.log').read_text()}")
            try:
                if get(f"{url}/api/v1/fleet")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        # A server error behind a page is a failure even when the page looked right.
        assert "Traceback" not in (tmp_path / "dashboard.log").read_text()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # The machine may be busy (a shared 2-core runner): generous, not flaky.
        page.set_default_timeout(90_000)
        yield page
        browser.close()


def _number_text(value) -> str:
    return f"{value:,}" if isinstance(value, int) else None


def test_every_headline_on_the_overview_equals_the_api(production_url, page, tmp_path):
    for _ in range(3):  # a tick may turn between the page and the API call: try again
        page.goto(f"{production_url}/", wait_until="networkidle")
        page.wait_for_selector("#fleet-snapshot_sha256", timeout=90_000)
        _, api, _ = get(f"{production_url}/api/v1/fleet")
        if page.get_attribute("#fleet-as_of", "data-value") == api["as_of"]:
            break
    assert page.inner_text("#fleet-snapshot_sha256") == api["snapshot_sha256"]
    for group, field in HEADLINES:
        element = f"#fleet-{group}-{field}"
        assert page.get_attribute(element, "data-value") == str(api[group][field]), element
        text = page.inner_text(element)
        if group in ("nodes", "gpus"):
            assert text == f"{api[group][field]:,}", element
        else:
            decimals = 1 if group == "gpu_hours" else 2
            assert text == f"{api[group][field]:,.{decimals}f}", element
    for check in api["checks"]:
        assert ("holds" if check["ok"] else "FAILS") in page.inner_text(f"#check-{check['name']}")
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)


def test_the_nodes_grid_pages_on_the_server_and_links_to_each_node(production_url, page, live_fleet):
    page.goto(f"{production_url}/nodes", wait_until="networkidle")
    # Rows show as placeholders until their block arrives from the server.
    page.wait_for_selector("#nodes-grid .ag-row [col-id=name] a")
    names = page.locator("#nodes-grid .ag-row [col-id=name]").all_inner_texts()
    assert sorted(n.strip() for n in names) == sorted(live_fleet)
    page.click("#nodes-tabs .tab >> text=GPUs")
    page.wait_for_selector("#gpus-grid .ag-row [col-id=node_name] a")
    # Rows are rendered as they scroll into view; the pager counts them all.
    assert page.inner_text("#gpus-grid .ag-paging-row-summary-panel").split()[-1] == "13"
    page.goto(f"{production_url}/nodes", wait_until="networkidle")
    page.wait_for_selector("#nodes-grid .ag-row [col-id=name] a")
    page.click("#nodes-grid a:text-is('delta')")
    page.wait_for_selector("#node-reputation")
    assert page.url.endswith(f"/nodes/{live_fleet['delta']}")


def test_the_node_page_shows_the_api_reputation_and_uptime(production_url, page, live_fleet):
    node_id = live_fleet["bravo"]
    page.goto(f"{production_url}/nodes/{node_id}", wait_until="networkidle")
    page.wait_for_selector("#node-reputation")
    _, api, _ = get(f"{production_url}/api/v1/nodes/{node_id}")
    assert page.get_attribute("#node-reputation", "data-value") == str(api["reputation"]["score"])
    assert page.get_attribute("#node-uptime_24h", "data-value") == str(api["uptime_24h"]["ratio"])
    assert "J (job success, 30 d)" in page.inner_text("#node-reputation-inputs")
    page.goto(f"{production_url}/nodes/987654", wait_until="networkidle")
    page.wait_for_selector("#node-not-found")


def test_the_integrity_and_methodology_pages_render(production_url, page):
    page.goto(f"{production_url}/integrity", wait_until="networkidle")
    page.wait_for_selector("#integrity-findings .ag-row")
    _, api, _ = get(f"{production_url}/api/v1/integrity")
    assert page.get_attribute("#integrity-flagged", "data-value") == str(api["gpus"]["flagged"])
    assert page.locator("#integrity-findings .ag-row").count() == api["total"]
    page.goto(f"{production_url}/methodology", wait_until="networkidle")
    for definition in ("node-state", "gpu-state", "uptime", "accounting", "reputation", "snapshot", "integrity"):
        assert page.locator(f"#definition-{definition}").count() == 1
    assert "100 x V x (0.5 U7 + 0.3 U1 + 0.2 J)" in page.inner_text("#definition-reputation")


def test_the_operator_view_shows_only_the_operators_own_nodes(dsn, production_url, page, live_fleet):
    import psycopg

    from fleetscope.registry import create_operator, register_node

    with psycopg.connect(dsn, autocommit=True) as conn:
        _, token = create_operator(conn, "acme-gpu")
        register_node(conn, operator_id=conn.execute("SELECT operator_id FROM operators WHERE name = 'acme-gpu'")
                      .fetchone()[0], name="acme-rig-1")
    page.goto(f"{production_url}/operator", wait_until="networkidle")
    page.fill("#operator-token", "not-a-token")
    page.click("#operator-submit")
    page.wait_for_selector("#operator-error")
    page.fill("#operator-token", token)
    page.click("#operator-submit")
    page.wait_for_selector("#operator-nodes .ag-row [col-id=link] a")
    shown = page.locator("#operator-nodes .ag-row [col-id=link]").all_inner_texts()
    assert [s.strip() for s in shown] == ["acme-rig-1"]
    assert "acme-gpu" in page.inner_text("#operator-name")
    assert token not in page.url
