"""/api/v1/snapshots lists the published hash chain; each bundle downloads and verifies."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import psycopg

from fleetscope.chain import publish
from fleetscope.snapshot import default_as_of
from tests.dashboard_harness import get


def test_published_snapshots_are_listed_and_their_bundles_download_and_verify(dsn, explorer_url, tmp_path):
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = publish(conn, as_of=default_as_of().replace(second=0, minute=0), bundle_dir=tmp_path / "bundles")
        second = publish(conn, as_of=default_as_of(), bundle_dir=tmp_path / "bundles")
    status, listing, _ = get(f"{explorer_url}/api/v1/snapshots")
    assert status == 200 and listing["chain_ok"]
    items = listing["items"]
    assert [i["sha256"] for i in items] == [second.sha256, first.sha256]
    assert items[0]["prev_sha256"] == first.sha256
    with urllib.request.urlopen(explorer_url + items[0]["bundle_url"], timeout=60) as response:
        assert response.headers["Content-Type"] == "application/zip"
        data = response.read()
    downloaded = tmp_path / "downloaded.zip"
    downloaded.write_bytes(data)
    result = subprocess.run([sys.executable, "-m", "fleetscope.cli", "verify", str(downloaded)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert get(f"{explorer_url}/api/v1/snapshots/999999/bundle")[0] == 404
    assert get(f"{explorer_url}/api/v1/snapshots?limit=0")[0] == 400
