"""In headless Chromium, on the production server (gunicorn, two workers): the pages show the API's numbers.

Needs Debian's chromium (.ci/run installs it); skips with the reason when it is absent.
"""

from __future__ import annotations

import pytest

from tests.browser_harness import browser, needs_chromium, production_dashboard  # noqa: F401 - a fixture
from tests.dashboard_harness import get

pytestmark = needs_chromium
HEADLINES = [("nodes", k) for k in ("registered", "online", "offline")] + [
    ("gpus", k) for k in ("registered", "online", "offline", "hired", "hired_offline", "idle", "verified",
                          "unverified", "flagged")] + [
    ("gpu_hours", "last_24h"), ("gpu_hours", "total"), ("revenue_usd", "last_24h"), ("revenue_usd", "total")]


@pytest.fixture
def production_url(dsn, live_fleet, tmp_path):
    with production_dashboard(dsn, tmp_path) as url:
        yield url


def _page(browser, width: int):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    # The machine may be busy (a shared 2-core runner): generous, not flaky.
    page.set_default_timeout(90_000)
    return page


@pytest.fixture
def page(browser):
    return _page(browser, 1400)


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
    for _ in range(4):  # the page and the API read within one 15 s tick (uptime counts to the tick)
        _, before, _ = get(f"{production_url}/api/v1/nodes/{node_id}")
        page.goto(f"{production_url}/nodes/{node_id}", wait_until="networkidle")
        page.wait_for_selector("#node-reputation")
        _, api, _ = get(f"{production_url}/api/v1/nodes/{node_id}")
        if api["as_of"] == before["as_of"]:
            break
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


# Issue 16: every page at a desktop width and at a phone's.
WIDTHS = (1400, 400)
NAV = {"Overview": "/", "Nodes & GPUs": "/nodes", "Integrity": "/integrity", "Methodology": "/methodology",
       "Operators": "/operator"}
# Columns whose text must never be cut ("2026-12-…", "NVIDIA A100-SXM…").
WHOLE = ("model", "models", "last_ok", "first_seen", "last_seen", "decided_at", "gpu_uuid", "name", "node_name",
         "node")
FIT_JS = """grid => [...grid.querySelectorAll('.ag-center-cols-container .ag-cell')]
    .filter(c => WHOLE.includes(c.getAttribute('col-id')) && c.innerText.trim())
    .filter(c => c.scrollWidth > c.clientWidth + 1)
    .map(c => c.getAttribute('col-id') + ': ' + c.innerText)""".replace("WHOLE", str(list(WHOLE)))


def _layout_holds(page, width: int) -> None:
    """At this width: no sideways scrolling of the page, every nav link on screen, every grid readable."""
    inner = page.evaluate("innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= inner, f"the page scrolls sideways at {width} px"
    for label in NAV:
        link = page.locator(f".topbar nav a:text-is('{label}')")
        box = link.bounding_box()
        assert link.is_visible() and box and box["x"] >= 0 and box["x"] + box["width"] <= inner, label
    for grid in page.locator(".ag-root-wrapper").all():
        headers = [h.strip() for h in grid.locator(".ag-header-cell-text").all_inner_texts() if h.strip()]
        assert headers, "a grid without headers"
        for header in headers:
            assert "_" not in header and (header[0].isupper() or header == "#"), f"raw header {header!r}"
        assert grid.evaluate(FIT_JS) == [], "cut-off cells"
        # The grid scrolls inside its own box, never wider than the page.
        assert grid.bounding_box()["x"] + grid.bounding_box()["width"] <= inner + 1


def _nav(page, label: str) -> None:
    page.click(f".topbar nav a:text-is('{label}')")
    page.wait_for_url(f"**{NAV[label]}")


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_reads_at_a_desktop_and_a_phone_width(production_url, browser, live_fleet, width, tmp_path):
    page = _page(browser, width)
    page.goto(f"{production_url}/", wait_until="networkidle")
    page.wait_for_selector("#fleet-snapshot_sha256")
    _, fleet, _ = get(f"{production_url}/api/v1/fleet")
    if page.get_attribute("#fleet-as_of", "data-value") == fleet["as_of"]:
        assert page.get_attribute("#fleet-gpus-registered", "data-value") == str(fleet["gpus"]["registered"])
    _layout_holds(page, width)
    page.screenshot(path=str(tmp_path / f"overview-{width}.png"), full_page=True)

    _nav(page, "Nodes & GPUs")
    page.wait_for_selector("#nodes-grid .ag-row [col-id=name] a")
    page.wait_for_selector("#nodes-grid .ag-row [col-id=last_ok]:not(:empty)")
    _layout_holds(page, width)
    headers = page.locator("#nodes-grid .ag-header-cell-text").all_inner_texts()
    assert "Reputation" in headers and "Last seen (UTC)" in headers
    page.screenshot(path=str(tmp_path / f"nodes-{width}.png"), full_page=True)

    page.click("#nodes-grid a:text-is('bravo')")
    page.wait_for_selector("#node-reputation")
    page.wait_for_selector("#node-gpus .ag-row")
    _layout_holds(page, width)
    for _ in range(3):  # a tick may turn between the page and the API call: try again
        _, node, _ = get(f"{production_url}/api/v1/nodes/{live_fleet['bravo']}")
        if page.get_attribute("#node-reputation", "data-value") == str(node["reputation"]["score"]):
            break
        page.reload(wait_until="networkidle")
        page.wait_for_selector("#node-gpus .ag-row")
    assert page.get_attribute("#node-reputation", "data-value") == str(node["reputation"]["score"])
    models = page.locator("#node-gpus .ag-row [col-id=model]").all_inner_texts()
    assert sorted(m.strip() for m in models) == sorted(g["model"] for g in node["gpus"])
    page.screenshot(path=str(tmp_path / f"node-{width}.png"), full_page=True)

    _nav(page, "Integrity")
    page.wait_for_selector("#integrity-findings .ag-row")
    _layout_holds(page, width)
    page.screenshot(path=str(tmp_path / f"integrity-{width}.png"), full_page=True)

    _nav(page, "Methodology")
    page.wait_for_selector("#definition-reputation")
    _layout_holds(page, width)

    _nav(page, "Operators")
    page.wait_for_selector("#operator-token")
    _layout_holds(page, width)
    page.close()


def test_the_nodes_grid_shows_the_apis_uptime_and_reputation(production_url, page, live_fleet):
    from dashboard import format as fmt

    for _ in range(3):  # a tick may turn between the grid's block and the API call: try again
        page.goto(f"{production_url}/nodes", wait_until="networkidle")
        page.wait_for_selector("#nodes-grid .ag-row [col-id=reputation]:not(:empty)")
        # Rows past the last are placeholders until the server says how many there are.
        page.wait_for_function(f"document.querySelectorAll('#nodes-grid .ag-center-cols-container .ag-row')"
                               f".length == {len(live_fleet)}")
        page.wait_for_timeout(500)
        rows = page.evaluate("""[...document.querySelectorAll('#nodes-grid .ag-center-cols-container .ag-row')]
            .map(r => Object.fromEntries(['node_id', 'uptime_24h', 'uptime_7d', 'reputation']
                .map(c => [c, r.querySelector(`[col-id=${c}]`).innerText.trim()])))""")
        shown = {int(r.pop("node_id")): r for r in rows if r["node_id"]}
        _, api, _ = get(f"{production_url}/api/v1/nodes?limit=1000")
        expected = {item["node_id"]: {"uptime_24h": fmt.percent(item["uptime_24h"]),
                                      "uptime_7d": fmt.percent(item["uptime_7d"]),
                                      "reputation": f"{item['reputation']:.2f}"} for item in api["items"]}
        if shown == expected:
            break
    assert shown == expected
    assert sorted(shown) == sorted(live_fleet.values())
    # The list's numbers are the node detail's own.
    for node_id in live_fleet.values():
        _, detail, _ = get(f"{production_url}/api/v1/nodes/{node_id}")
        item = next(i for i in api["items"] if i["node_id"] == node_id)
        if detail["as_of"] == api["as_of"]:
            assert item["reputation"] == detail["reputation"]["score"]
            assert item["uptime_24h"] == detail["uptime_24h"]["ratio"]
            assert item["uptime_7d"] == detail["uptime_7d"]["ratio"]


def test_a_findings_evidence_opens_in_full_on_click(production_url, page):
    import json

    page.goto(f"{production_url}/integrity", wait_until="networkidle")
    page.wait_for_selector("#integrity-findings .ag-row [col-id=evidence]")
    _, api, _ = get(f"{production_url}/api/v1/integrity")
    first = page.locator("#integrity-findings .ag-center-cols-container .ag-row[row-index='0']")
    first.locator("[col-id=evidence]").click()
    page.wait_for_selector("#integrity-finding-evidence")
    shown = json.loads(page.inner_text("#integrity-finding-evidence"))
    kind = first.locator("[col-id=kind]").inner_text().strip()
    assert shown in [f["evidence"] for f in api["items"] if f["kind"] == kind]


def test_the_page_size_selector_offers_sizes_and_changes_the_page(production_url, page, live_fleet):
    page.goto(f"{production_url}/nodes", wait_until="networkidle")
    page.click("#nodes-tabs .tab >> text=GPUs")
    page.wait_for_selector("#gpus-grid .ag-row [col-id=node_name] a")
    selector = page.locator("#gpus-grid .ag-paging-page-size")
    assert selector.locator(".ag-picker-field-display").inner_text().strip() == "50"
    selector.locator(".ag-picker-field-wrapper").click()
    options = [o.strip() for o in page.locator(".ag-select-list-item").all_inner_texts()]
    assert options == ["25", "50", "100"]
    page.locator(".ag-select-list-item").filter(has_text="25").first.click()
    assert selector.locator(".ag-picker-field-display").inner_text().strip() == "25"
