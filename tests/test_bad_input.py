"""Bad DSNs, unreachable or old servers, unusable data directories: one clear message each."""

from __future__ import annotations

import os
import socket

import pytest

from fleetscope import db
from fleetscope.embedded import EmbeddedServer
from fleetscope.errors import FleetscopeError
from tests.conftest import free_port


def test_a_malformed_dsn_is_named():
    with pytest.raises(FleetscopeError, match="the DSN is not valid"):
        db.resolve_dsn("host=x port")


def test_an_unreachable_server_is_named_with_its_address():
    port = free_port()
    with pytest.raises(FleetscopeError, match=rf"cannot connect to PostgreSQL at 127.0.0.1:{port}/x: .*refused"):
        db.connect(f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout=3)


def test_a_missing_database_is_named(pg_server):
    with pytest.raises(FleetscopeError, match='database "no_such_db" does not exist'):
        db.connect(pg_server.dsn_for("no_such_db"))


def test_a_server_older_than_required_is_refused(pg_server, monkeypatch):
    # A real server, held to a bar above its version: the same code path an
    # old server takes.
    monkeypatch.setattr(db, "MIN_SERVER_VERSION", 990000)
    with pytest.raises(FleetscopeError, match=r"fleetscope needs 99 or newer"):
        db.connect(pg_server.admin_dsn)


def test_a_data_directory_that_cannot_be_created_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    server = EmbeddedServer(data_dir=blocker / "data", port=free_port())
    with pytest.raises(FleetscopeError, match=r"cannot create the data directory .*a-file/data.*FLEETSCOPE_DATA_DIR"):
        server.ensure_running()


def test_a_directory_that_is_not_a_postgres_data_directory_is_refused(open_tmp):
    data = open_tmp / "data"
    (data / "pg").mkdir(parents=True)
    (data / "pg" / "something").write_text("x")
    server = EmbeddedServer(data_dir=data, port=free_port())
    with pytest.raises(FleetscopeError, match="is not a PostgreSQL data directory"):
        server.ensure_running()


def test_a_port_taken_by_another_program_is_named(open_tmp):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = EmbeddedServer(data_dir=open_tmp / "data", port=port)
        with pytest.raises(FleetscopeError, match=rf"port {port} on 127.0.0.1 is in use.*FLEETSCOPE_PG_PORT"):
            server.ensure_running()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_as_root_a_data_directory_the_service_user_cannot_reach_is_named(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    server = EmbeddedServer(data_dir=private / "data", port=free_port())
    with pytest.raises(FleetscopeError, match=r"runs as user 'fleetscope'.*private is not searchable"):
        server.ensure_running()
