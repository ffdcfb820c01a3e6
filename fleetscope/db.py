"""Connecting to the database: the DSN rule, version check and clear errors.

``--dsn`` falls back to ``FLEETSCOPE_DSN``, then to the embedded server
(DESIGN.md, Contract). Every failure to connect ends in one FleetscopeError
that names the server and the problem, never a driver traceback.
"""

from __future__ import annotations

import os

import psycopg
from psycopg.conninfo import conninfo_to_dict

from fleetscope.errors import FleetscopeError

# date_bin(), which the plain-PostgreSQL time_bucket shim needs, arrived in 14.
MIN_SERVER_VERSION = 140000
CONNECT_TIMEOUT_S = 10


def resolve_dsn(dsn: str | None = None) -> str:
    """Return the DSN to use: the argument, FLEETSCOPE_DSN, else the embedded server's.

    With neither given, starts the embedded server if it is not running.
    """
    dsn = dsn or os.environ.get("FLEETSCOPE_DSN") or None
    if dsn:
        describe_dsn(dsn)  # validates the syntax early, with a clear message
        return dsn
    from fleetscope.embedded import embedded_server

    return embedded_server().ensure_running()


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, for messages (never the password)."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as err:
        raise FleetscopeError(f"the DSN is not valid: {err}") from None
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{host}:{port}/{info.get('dbname') or info.get('user') or ''}"


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    """Open a connection, checking the server is new enough.

    Raises FleetscopeError naming the server when it cannot be reached, the
    credentials are refused, or its version is below MIN_SERVER_VERSION.
    """
    where = describe_dsn(dsn)
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    try:
        conn = psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
        raise FleetscopeError(f"cannot connect to PostgreSQL at {where}: {message}") from None
    check_server_version(conn, where)
    return conn


def check_server_version(conn: psycopg.Connection, where: str = "the server") -> None:
    version = conn.info.server_version
    if version < MIN_SERVER_VERSION:
        conn.close()
        raise FleetscopeError(
            f"PostgreSQL at {where} is version {version // 10000}; fleetscope needs "
            f"{MIN_SERVER_VERSION // 10000} or newer"
        )


