"""Migrations: ordered, recorded, idempotent; a failure leaves nothing half-applied."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from fleetscope.errors import FleetscopeError
from fleetscope.migrate import MIGRATIONS_DIR, database_mode, init_database, migrations_for


@pytest.fixture
def empty_dsn(pg_server):
    import uuid

    name = f"fs_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.dsn_for(name)
    pg_server.drop_database(name)


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_init_applies_every_migration_in_order_and_records_the_mode(empty_dsn):
    result = init_database(empty_dsn, mode="plain")
    assert result.mode == "plain"
    assert result.applied == [m.label for m in migrations_for("plain")]
    with psycopg.connect(empty_dsn) as conn:
        assert database_mode(conn) == "plain"
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY applied_at, version")]
    assert versions == sorted(versions)
    assert {"operators", "nodes", "gpus", "observations", "gpu_samples", "jobs", "integrity_findings",
            "published_snapshots", "alert_channels", "alert_state", "node_hourly_mat"} <= tables(empty_dsn)


def test_init_twice_is_a_no_op(empty_dsn):
    init_database(empty_dsn, mode="plain")
    before = tables(empty_dsn)
    assert init_database(empty_dsn).applied == []
    assert tables(empty_dsn) == before


def test_the_mode_cannot_change_after_the_first_init(empty_dsn):
    init_database(empty_dsn, mode="plain")
    with pytest.raises(FleetscopeError, match="initialised in plain mode"):
        init_database(empty_dsn, mode="timescaledb")


def test_a_failing_migration_is_rolled_back_and_named(empty_dsn, tmp_path):
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, tmp_path)
    (tmp_path / "0099_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nINSERT INTO half_done VALUES (1);\nSELECT no_such_function();\n")
    with pytest.raises(FleetscopeError, match=r"migration 0099_broken failed and was rolled back.*no_such_function"):
        init_database(empty_dsn, mode="plain", directory=tmp_path)
    assert "half_done" not in tables(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        newest = max(int(path.name[:4]) for path in MIGRATIONS_DIR.glob("*.sql"))
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == newest
    # Fixed, it applies on the next init, and only it.
    (tmp_path / "0099_broken.sql").write_text("CREATE TABLE half_done (x int);\n")
    assert init_database(empty_dsn, directory=tmp_path).applied == ["0099_broken"]


def test_a_changed_migration_file_is_refused(empty_dsn, tmp_path):
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, tmp_path)
    init_database(empty_dsn, mode="plain", directory=tmp_path)
    (tmp_path / "0001_core.sql").write_text((tmp_path / "0001_core.sql").read_text() + "\n-- edited\n")
    with pytest.raises(FleetscopeError, match="0001_core was applied from a different version"):
        init_database(empty_dsn, directory=tmp_path)


def test_a_schema_newer_than_this_fleetscope_is_refused(empty_dsn):
    init_database(empty_dsn, mode="plain")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
    with pytest.raises(FleetscopeError, match="migration 9999, newer than this fleetscope knows"):
        init_database(empty_dsn)


def test_tables_fleetscope_did_not_create_are_reported_not_overwritten(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE operators (id int)")
    with pytest.raises(FleetscopeError, match='0001_core failed.*"operators" already exists'):
        init_database(empty_dsn, mode="plain")
    assert tables(empty_dsn) == {"operators", "schema_migrations", "fleetscope_meta"}


def test_timescaledb_mode_makes_hypertables_and_a_continuous_aggregate(timescale_dsn):
    with psycopg.connect(timescale_dsn) as conn:
        assert database_mode(conn) == "timescaledb"
        hypertables = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
        assert {"observations", "gpu_samples"} <= hypertables
        caggs = {r[0] for r in conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")}
        assert "node_hourly" in caggs
        jobs = {r[0] for r in conn.execute("SELECT proc_name FROM timescaledb_information.jobs")}
        assert {"policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"} <= jobs
