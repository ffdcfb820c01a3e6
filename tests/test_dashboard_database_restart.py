"""The public API survives a database restart (issue 15, item 4).

Before, the dashboard's pooled connections went stale when PostgreSQL
restarted (psycopg AdminShutdown) and the API answered HTML 500s. Now a
pooled connection is checked before use and replaced, and a database error
is a JSON 503 with Retry-After, never a 500. Real dashboard on a real HTTP
server, real PostgreSQL restarted under it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from dashboard.serve import build
from fleetscope.registry import create_operator, register_node
from tests.dashboard_harness import get, serve

ENDPOINTS = ("/api/v1/nodes", "/api/v1/integrity", "/api/v1/fleet")


def _node(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        operator_id, _ = create_operator(conn, "acme")
        return register_node(conn, operator_id=operator_id, name="n",
                             registered_at=datetime.now(timezone.utc) - timedelta(hours=1)).node_id


def test_the_api_answers_after_a_database_restart(own_server, tmp_path):
    server, dsn = own_server
    node_id = _node(dsn)
    app = build(dsn, str(tmp_path / "cache"))
    with serve(app) as url:
        # (telemetry is read from the database on every request: no cache answers it)
        for path in (*ENDPOINTS, f"/api/v1/nodes/{node_id}/telemetry"):
            assert get(url + path)[0] == 200, path  # every pooled connection is in use now
        server.stop()
        server.ensure_running()
        for path in (f"/api/v1/nodes/{node_id}/telemetry", *ENDPOINTS):
            status, body, headers = get(url + path)
            assert status == 200, (path, status, body)
    app.config["FLEETSCOPE_EXPLORER"].close()


def test_the_api_answers_json_503_while_the_database_is_down(own_server, tmp_path):
    server, dsn = own_server
    node_id = _node(dsn)
    app = build(dsn, str(tmp_path / "cache"))
    with serve(app) as url:
        assert get(url + f"/api/v1/nodes/{node_id}/telemetry")[0] == 200
        server.stop()
        try:
            status, body, headers = get(url + f"/api/v1/nodes/{node_id}/telemetry")
        finally:
            server.ensure_running()
    assert status == 503, (status, body)
    assert headers["Content-Type"].startswith("application/json") and headers.get("Retry-After")
    assert body["error"] == "database_unavailable"
    app.config["FLEETSCOPE_EXPLORER"].close()
