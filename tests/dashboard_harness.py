"""Shared helpers for the dashboard tests: a live fleet around now, and the explorer on real HTTP.

The explorer computes everything as of the current snapshot tick, so the
fleet here is built around the present: nodes with a one-hour grace stay
online for the whole test, whatever tick it lands in.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from werkzeug.serving import make_server

from tests.fleetdata import Fleet

GRACE_S = 3600


def build_live_fleet(conn: psycopg.Connection) -> dict[str, int]:
    """Six nodes around now: online, hired, offline, flagged, a UUID shared by two nodes; jobs and a finding."""
    now = datetime.now(timezone.utc)
    past = now - timedelta(days=2)
    fleet = Fleet(conn)
    fleet.observing(now - timedelta(days=3), now + timedelta(hours=2))
    ids = {}
    for name, uuids, checked, seen, model in (
            ("alpha", ["GPU-a0", "GPU-a1", "GPU-a2", "GPU-a3"], True, True, "NVIDIA A100-SXM4-80GB"),
            ("bravo", ["GPU-b0", "GPU-b1"], True, True, "NVIDIA GeForce RTX 4090"),
            ("charlie", ["GPU-c0", "GPU-c1"], False, False, "NVIDIA GeForce RTX 4090"),
            ("delta", ["GPU-d0"], True, True, "NVIDIA H100 80GB HBM3"),
            ("echo", ["GPU-e0", "GPU-shared"], True, True, "NVIDIA L40S"),
            ("foxtrot", ["GPU-shared", "GPU-f1"], True, True, "NVIDIA L40S")):
        node = fleet.node(registered_at=past, interval_s=15, grace_s=GRACE_S, name=name)
        ids[name] = node
        fleet.gpus(node, uuids, checked=checked, since=past, model=model, proved_at=now - timedelta(hours=1))
        if seen:
            for minutes in range(0, 24 * 60, 30):
                fleet.observe(node, now - timedelta(minutes=minutes, seconds=40))
        else:
            fleet.observe(node, past + timedelta(minutes=5))
    fleet.job("job-alpha", ids["alpha"], gpu_count=3, price="1.50", started_at=now - timedelta(hours=3))
    fleet.job("job-charlie", ids["charlie"], gpu_count=1, price="0.40", started_at=now - timedelta(hours=1))
    fleet.job("job-bravo-done", ids["bravo"], gpu_count=2, price="0.40", started_at=now - timedelta(hours=6),
              ended_at=now - timedelta(hours=5))
    fleet.job("job-bravo-failed", ids["bravo"], gpu_count=1, price="0.40", started_at=now - timedelta(hours=4),
              ended_at=now - timedelta(hours=3, minutes=30), status="failed")
    fleet.finding("virtualized", node_id=ids["delta"], gpu_uuid="GPU-d0", first_seen=now - timedelta(hours=2))
    fleet.finding("duplicate_uuid", gpu_uuid="GPU-shared", first_seen=now - timedelta(hours=2),
                  resolved_at=now - timedelta(hours=1))
    return ids


PROOF_FAILED_REASON = "wrong result: C[17,4021] = 0.0, expected 3.617188 within 0.333333 (8 of 8 checked entries wrong)"


def add_decided_proofs(conn: psycopg.Connection, ids: dict[str, int]) -> None:
    """Proofs of GPU decided after the live fleet's passes an hour ago (each GPU of alpha, bravo, delta, echo, foxtrot).

    bravo's GPU-b1 failed 20 minutes ago, with the proof_failed finding the
    collector opens (collector/proof_verdicts.py); echo's GPU-e0 gave no
    answer 15 minutes ago (it stays verified by its pass); alpha's GPU-a3
    passed again 10 minutes ago. charlie was never challenged.
    """
    now = datetime.now(timezone.utc)
    operator_id = conn.execute("SELECT operator_id FROM nodes WHERE node_id = %s", (ids["bravo"],)).fetchone()[0]
    fleet = Fleet(conn, operator_id=operator_id)
    fleet.proof(ids["bravo"], "GPU-b1", "failed", decided_at=now - timedelta(minutes=20), reason=PROOF_FAILED_REASON)
    round_id = conn.execute("SELECT max(round_id) FROM proof_challenges").fetchone()[0]
    conn.execute("INSERT INTO integrity_findings (kind, node_id, gpu_uuid, evidence, first_seen, last_seen)"
                 " VALUES ('proof_failed', %s, 'GPU-b1', %s, %s, %s)",
                 (ids["bravo"], json.dumps({"round_id": round_id, "reason": PROOF_FAILED_REASON}),
                  now - timedelta(minutes=20), now - timedelta(minutes=20)))
    fleet.proof(ids["echo"], "GPU-e0", "no_answer", decided_at=now - timedelta(minutes=15),
                reason="no answer: the host did not ask for its seed within 10 s")
    fleet.proof(ids["alpha"], "GPU-a3", "passed", decided_at=now - timedelta(minutes=10))


@pytest.fixture
def proof_fleet(dsn: str, live_fleet: dict[str, int]) -> dict[str, int]:
    """The live fleet with the decided proofs of ``add_decided_proofs``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        add_decided_proofs(conn, live_fleet)
    return live_fleet


@contextmanager
def serve(wsgi_app) -> Iterator[str]:
    """``wsgi_app`` on a real threaded HTTP server on 127.0.0.1; yields its base URL."""
    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def get(url: str) -> tuple[int, dict | str, dict[str, str]]:
    """GET ``url``: (status, parsed JSON or text, headers)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            status, body, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        status, body, headers = err.code, err.read(), dict(err.headers)
    text = body.decode()
    if headers.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(text), headers
    return status, text, headers


@pytest.fixture
def live_fleet(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return build_live_fleet(conn)


@pytest.fixture
def explorer(dsn: str, tmp_path: Path):
    from dashboard.service import Service

    ex = Service(dsn, cache_dir=tmp_path / "cache")
    yield ex
    ex.close()


@pytest.fixture
def explorer_url(explorer, live_fleet) -> Iterator[str]:
    from dashboard.app import create_app

    with serve(create_app(explorer).server) as url:
        yield url
