"""In headless Chromium: what a visitor sees of proofs of GPU on a node's page, /integrity and /methodology.

Needs Debian's chromium (.ci/run installs it); skips with the reason when it is absent.
"""

from __future__ import annotations

import pytest

from fleetscope import proof
from tests.browser_harness import browser, needs_chromium  # noqa: F401 - a fixture
from tests.dashboard_harness import PROOF_FAILED_REASON, get, proof_fleet  # noqa: F401

pytestmark = needs_chromium


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)  # a shared 2-core runner: generous, not flaky
    yield page


def test_a_visitor_sees_verdicts_on_node_pages_integrity_and_the_protocol(explorer_url, proof_fleet, page):
    page.goto(f"{explorer_url}/nodes/{proof_fleet['bravo']}", wait_until="networkidle")
    page.wait_for_selector("#node-proofs")
    rows = page.locator("#node-proofs tbody tr").all_inner_texts()
    assert len(rows) == 2
    assert "GPU-b0" in rows[0] and "passed" in rows[0] and "TFLOPS implied" in rows[0]
    assert "GPU-b1" in rows[1] and "failed" in rows[1] and PROOF_FAILED_REASON in rows[1]

    page.goto(f"{explorer_url}/nodes/{proof_fleet['charlie']}", wait_until="networkidle")
    assert "counted but never verified" in page.inner_text("#node-proofs-none")

    page.goto(f"{explorer_url}/integrity", wait_until="networkidle")
    page.wait_for_selector("#integrity-proofs .ag-row")
    _, api, _ = get(f"{explorer_url}/api/v1/proofs")
    assert page.inner_text("#integrity-proofs-failed") == str(api["last_24h"]["failed"])
    assert page.inner_text("#integrity-proofs-passed") == str(api["last_24h"]["passed"])
    assert page.inner_text("#integrity-proofs .ag-paging-row-summary-panel").split()[-1] == str(api["total"])
    page.click("#integrity-proofs a:text-is('bravo') >> nth=0")
    page.wait_for_selector("#node-proofs")
    assert page.url.endswith(f"/nodes/{proof_fleet['bravo']}")

    page.goto(f"{explorer_url}/methodology", wait_until="networkidle")
    section = page.inner_text("#definition-proof-of-gpu")
    assert f"version {proof.PROTOCOL_VERSION}" in section and "Merkle root" in section
    assert page.locator("#constants-proof-of-gpu tr").count() == len(proof.parameters())
