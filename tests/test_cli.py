"""The fleetscope command as a user runs it: db init, operator create, snapshot, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from fleetscope.registry import operator_for_token
from tests.conftest import free_port


def fleetscope(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetscope.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_db_init_twice_then_operator_create_then_snapshot(pg_server):
    name = f"fs_cli_{os.getpid()}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg_server.dsn_for(name)
    try:
        first = fleetscope("db", "init", "--dsn", dsn, "--mode", "plain")
        assert first.returncode == 0, first.stderr
        assert "0001_core, 0002_telemetry, 0003_timeseries.plain" in first.stdout
        second = fleetscope("db", "init", "--dsn", dsn)
        assert "nothing to apply, schema is current" in second.stdout

        created = fleetscope("operator", "create", "acme", env={"FLEETSCOPE_DSN": dsn})
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        assert token.startswith("fso_") and "shown once" in created.stderr
        with psycopg.connect(dsn) as conn:
            assert operator_for_token(conn, token) is not None
            assert operator_for_token(conn, token + "x") is None
        again = fleetscope("operator", "create", "acme", "--dsn", dsn)
        assert again.returncode == 2 and "an operator named 'acme' already exists" in again.stderr

        snap = fleetscope("snapshot", "--dsn", dsn, "--as-of", "2026-11-24T12:00:00Z")
        assert snap.returncode == 0, snap.stderr
        body = json.loads(snap.stdout)
        assert body["as_of"] == "2026-11-24T12:00:00Z"
        assert body["nodes"] == {"registered": 0, "online": 0, "offline": 0}
        assert len(body["snapshot_sha256"]) == 64
        assert fleetscope("snapshot", "--dsn", dsn, "--as-of", "2026-11-24T12:00:00Z").stdout == snap.stdout
    finally:
        pg_server.drop_database(name)


def test_a_database_without_the_schema_says_to_run_db_init(pg_server):
    result = fleetscope("snapshot", "--dsn", pg_server.admin_dsn)
    assert result.returncode == 2
    assert "has no fleetscope schema; run 'fleetscope db init'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_server_is_one_line_and_exit_status_2():
    result = fleetscope("db", "init", "--dsn", f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert result.returncode == 2
    assert result.stderr.startswith("fleetscope: error: cannot connect to PostgreSQL at 127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_without_a_dsn_it_starts_the_embedded_server_in_the_data_directory(open_tmp):
    env = {"FLEETSCOPE_DATA_DIR": str(open_tmp / "data"), "FLEETSCOPE_PG_PORT": str(free_port()),
           "FLEETSCOPE_DSN": ""}
    try:
        result = fleetscope("db", "init", env=env)
        assert result.returncode == 0, result.stderr
        assert "plain mode" in result.stdout
        status = fleetscope("db", "status", env=env)
        assert "running on 127.0.0.1:" in status.stdout
    finally:
        assert fleetscope("db", "stop", env=env).stdout.strip() == "stopped"
