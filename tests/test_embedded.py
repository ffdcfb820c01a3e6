"""The embedded server: starts from nothing, is reused, stops cleanly."""

from __future__ import annotations

import psycopg

from fleetscope.embedded import EmbeddedServer
from fleetscope.migrate import init_database
from tests.conftest import free_port


def test_it_initialises_starts_reuses_and_stops_a_server_in_its_data_directory(open_tmp):
    server = EmbeddedServer(data_dir=open_tmp / "data", port=free_port())
    dsn = server.ensure_running()
    try:
        assert init_database(dsn).mode == "plain"
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "fleetscope"
        # A second start reuses the running server, on the port it runs on.
        other = EmbeddedServer(data_dir=open_tmp / "data", port=free_port())
        assert other.ensure_running() == dsn
        assert server.stop() is True
        assert server.running_port() is None
        # Started again, the data is still there and nothing is re-initialised.
        assert server.ensure_running() == dsn
        assert init_database(dsn).applied == []
    finally:
        server.stop()
    assert server.stop() is False


def test_the_server_refuses_a_connection_without_its_password(open_tmp):
    import pytest

    server = EmbeddedServer(data_dir=open_tmp / "data", port=free_port())
    dsn = server.ensure_running()
    try:
        assert (open_tmp / "data" / "password").stat().st_mode & 0o077 == 0
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/fleetscope", connect_timeout=5)
    finally:
        server.stop()
