"""Dash's own routes answer a client's nonsense with 404 or 400, never 500 (issue 15, item 4).

Path traversal and unknown packages under /_dash-component-suites/, and
callback bodies that name no callback or are not JSON, were answered HTML
500s. Real dashboard, real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from dashboard.serve import build
from tests.dashboard_harness import get, serve


@pytest.fixture
def dashboard_url(dsn, tmp_path):
    app = build(dsn, str(tmp_path / "cache"))
    with serve(app) as url:
        yield url
    app.config["FLEETSCOPE_EXPLORER"].close()


@pytest.mark.parametrize("path", [
    "/_dash-component-suites/dash/../../../../etc/passwd",
    "/_dash-component-suites/dash/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/_dash-component-suites/dash/..%2f..%2f..%2fetc%2fpasswd",
    "/_dash-component-suites/not_a_package/x.js",
    "/assets/../app.py",
])
def test_traversal_and_unknown_files_are_not_found(dashboard_url, path):
    status, body, _ = get(dashboard_url + path)
    assert status == 404, (status, body)


def _post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"]


@pytest.mark.parametrize("body", [b"garbage", b"[]", b'{"output": "no-such.children", "inputs": []}',
                                  b'{"output": 7}', b"{}"])
def test_bogus_callback_bodies_are_bad_requests(dashboard_url, body):
    status, content_type = _post(dashboard_url + "/_dash-update-component", body)
    assert status == 400 and content_type.startswith("application/json")


def test_the_pages_still_load(dashboard_url):
    assert get(dashboard_url + "/_dash-layout")[0] == 200
    assert get(dashboard_url + "/")[0] == 200
