"""The test harness: a real PostgreSQL server for the session, a fresh database per test.

By default the session starts fleetscope's own embedded server in a temporary
directory on a free port. With FLEETSCOPE_TEST_DSN (a superuser DSN of another
server, for example one with TimescaleDB) the same suite runs against that
server instead; each test gets a new database on it either way.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fleetscope.migrate import init_database

TEST_DSN_ENV = "FLEETSCOPE_TEST_DSN"
# The tests' fleets, exporters and webhooks live on 127.0.0.1, which the
# collector refuses to connect to unless this is set (issue 15; DESIGN.md,
# "Trust boundaries"). Tests of the refusal build their own AddressPolicy.
os.environ["FLEETSCOPE_ALLOW_PRIVATE_TARGETS"] = "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A PostgreSQL server the tests may create and drop databases on."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            self.has_timescaledb = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is not None
        self._templates: dict[str, str] = {}

    def dsn_for(self, database: str) -> str:
        params = conninfo_to_dict(self.admin_dsn)
        params["dbname"] = database
        return make_conninfo(**params)

    def create_database(self, *, mode: str) -> str:
        """A new, migrated database in ``mode``, cloned from a template; returns its name.

        Cloning a migrated template takes ~50 ms instead of ~400 ms for the
        migrations. The template is closed to connections, as template0 is:
        on a TimescaleDB server the background-worker launcher connects to
        every database, and CREATE DATABASE ... TEMPLATE refuses a source that
        has sessions.
        """
        name = f"fs_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            template = self._template(conn, mode)
            for _ in range(50):
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                             (template,))
                try:
                    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    return name
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)
            raise RuntimeError(f"template {template} stayed busy")

    def _template(self, conn: psycopg.Connection, mode: str) -> str:
        if mode not in self._templates:
            name = f"fs_template_{mode}_{uuid.uuid4().hex[:8]}"
            conn.execute(f'CREATE DATABASE "{name}"')
            init_database(self.dsn_for(name), mode=mode)
            conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
            self._templates[mode] = name
        return self._templates[mode]

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in self._templates.values():
                conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The session's PostgreSQL server: FLEETSCOPE_TEST_DSN's, else a fresh embedded one."""
    external = os.environ.get(TEST_DSN_ENV)
    if external:
        server = Server(external)
        yield server
        server.close()
        return
    from fleetscope.embedded import EmbeddedServer

    # Not tmp_path_factory: as root, pytest's base directory is mode 0700 and
    # the server runs as another user (fleetscope/embedded.py).
    data_dir = Path(tempfile.mkdtemp(prefix="fleetscope-test-pg-"))
    embedded = EmbeddedServer(data_dir=data_dir, port=free_port())
    embedded.ensure_running()
    server = Server(embedded.dsn("postgres"))
    try:
        yield server
    finally:
        server.close()
        embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def dsn(pg_server: Server) -> Iterator[str]:
    """DSN of a fresh database migrated in plain-PostgreSQL mode (CI's mode)."""
    name = pg_server.create_database(mode="plain")
    yield pg_server.dsn_for(name)
    pg_server.drop_database(name)


@pytest.fixture
def timescale_dsn(pg_server: Server) -> Iterator[str]:
    """DSN of a fresh database migrated in TimescaleDB mode; skips without the extension."""
    if not pg_server.has_timescaledb:
        pytest.skip(f"the test server has no TimescaleDB extension; set {TEST_DSN_ENV} to a server that has it")
    name = pg_server.create_database(mode="timescaledb")
    yield pg_server.dsn_for(name)
    pg_server.drop_database(name)


@pytest.fixture(params=["plain", "timescaledb"])
def any_mode_dsn(request: pytest.FixtureRequest, pg_server: Server) -> Iterator[str]:
    """A fresh database in each mode in turn (TimescaleDB skipped without the extension)."""
    if request.param == "timescaledb" and not pg_server.has_timescaledb:
        pytest.skip(f"the test server has no TimescaleDB extension; set {TEST_DSN_ENV} to a server that has it")
    name = pg_server.create_database(mode=request.param)
    yield pg_server.dsn_for(name)
    pg_server.drop_database(name)


@pytest.fixture
def conn(any_mode_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database, in UTC, in each mode in turn."""
    with psycopg.connect(any_mode_dsn, autocommit=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        yield connection


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory every user can traverse (the embedded server may run as another user)."""
    path = Path(tempfile.mkdtemp(prefix="fleetscope-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_server(open_tmp):
    """A PostgreSQL server of the test's own, which it may kill: (EmbeddedServer, DSN of a migrated database)."""
    from fleetscope.embedded import EmbeddedServer

    server = EmbeddedServer(data_dir=open_tmp / "pg", port=free_port())
    dsn = server.ensure_running()
    init_database(dsn, mode="plain")
    yield server, dsn
    server.stop()


# The collector tests' shared fixtures (client, settings, storage,
# operator_token), defined beside their helpers in tests/collector_harness.py.
from tests.collector_harness import client, operator_token, settings, storage  # noqa: E402, F401
from tests.dashboard_harness import explorer, explorer_url, live_fleet  # noqa: E402, F401
