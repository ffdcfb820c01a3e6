"""Screenshots of every explorer page at 1400 px and 400 px (playwright driving Debian's chromium).

    FLEETSCOPE_DATA_DIR=$(mktemp -d) fleetscope demo &   # a fresh demo
    sleep 25                                              # it answers, then ~10 s of live data
    python docs/screenshots/take.py http://127.0.0.1:8050 docs/screenshots

Prints each page's document width beside the window's (at 400 px they must be
equal: no sideways scrolling). The committed PNGs were then reduced to 128
colours to keep the repository small.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request

from playwright.sync_api import sync_playwright

WIDTHS = (1400, 400)
SETTLE_MS = 2500  # the charts' callbacks after the network is idle


def main(base: str, out: str) -> None:
    with urllib.request.urlopen(base + "/api/v1/nodes?limit=1", timeout=30) as response:
        node_id = json.load(response)["items"][0]["node_id"]
    pages = {"overview": "/", "nodes": "/nodes", "node": f"/nodes/{node_id}", "integrity": "/integrity",
             "methodology": "/methodology", "operator": "/operator"}
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 900})
            for name, path in pages.items():
                page.goto(base + path, wait_until="networkidle")
                page.wait_for_timeout(SETTLE_MS)
                print(name, width, "document/window width:",
                      page.evaluate("[document.documentElement.scrollWidth, innerWidth]"))
                page.screenshot(path=f"{out}/{name}-{width}.png", full_page=True)
            page.close()
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"), sys.argv[2])
