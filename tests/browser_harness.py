"""What the browser tests share: Debian's chromium through playwright, and the production dashboard process.

Every browser test file sets ``pytestmark = needs_chromium`` (they skip,
saying why, where chromium is missing; .ci/run installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.dashboard_harness import get

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")


@pytest.fixture
def browser():
    """A headless chromium (playwright driving Debian's binary, no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@contextlib.contextmanager
def production_dashboard(dsn: str, tmp_path: Path, *args: str, tries: int = 300) -> Iterator[str]:
    """``fleetscope dashboard`` as in production (gunicorn, two workers) on a free port; yields its URL.

    A server error behind a page is a failure even when the page looked right:
    a traceback in its log fails the test at the end.
    """
    port = free_port()
    log_path = tmp_path / "dashboard.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetscope.cli", "dashboard", "--dsn", dsn, "--port", str(port), "--workers", "2",
         "--cache-dir", str(tmp_path / "cache"), *args],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(tries):
            if proc.poll() is not None:
                raise AssertionError(f"the dashboard exited: {log_path.read_text()}")
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
        assert "Traceback" not in log_path.read_text()
