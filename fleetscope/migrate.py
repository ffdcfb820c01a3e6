"""Schema migrations: ordered, recorded, idempotent, each one all or nothing.

Migrations are the SQL files in ``fleetscope/migrations`` named
``NNNN_name.sql`` (both modes) or ``NNNN_name.MODE.sql`` (one mode only, MODE
being ``plain`` or ``timescaledb``). ``init_database`` applies the missing ones
in order, each in its own transaction together with the row that records it,
so a failure leaves nothing half-applied: the migration is rolled back and not
recorded, and the error names it. The mode is decided at the first init and
recorded with the first migration; later inits keep it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from fleetscope.db import connect
from fleetscope.errors import FleetscopeError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MODES = ("plain", "timescaledb")
# Any constant works; it only has to be the same for every fleetscope process
# so two `db init` at once apply each migration once.
ADVISORY_LOCK_KEY = 0x666C6565  # "flee"
# Continuous aggregates with count(DISTINCT ...) FILTER need the finalized form
# (2.7+), and DISTINCT aggregates over partly compressed chunks were fixed
# after 2.10 (timescale/timescaledb#5487). Tested: 2.28.
MIN_TIMESCALEDB = (2, 13)
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(plain|timescaledb))?\.sql$")

BOOTSTRAP_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    variant    text,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS fleetscope_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variant: str | None
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}" + (f".{self.variant}" if self.variant else "")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass
class InitResult:
    mode: str
    applied: list[str] = field(default_factory=list)


def migrations_for(mode: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations that apply in ``mode``, in order, one per version."""
    by_version: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise FleetscopeError(f"migration file {path.name} does not follow NNNN_name[.mode].sql")
        version, name, variant = int(match[1]), match[2], match[3]
        if variant is not None and variant != mode:
            continue
        if version in by_version:
            raise FleetscopeError(f"two migrations for version {version:04d} in mode {mode}")
        by_version[version] = Migration(version, name, variant, path.read_text())
    return [by_version[v] for v in sorted(by_version)]


def database_mode(conn: psycopg.Connection) -> str | None:
    """The mode recorded at init ('plain' or 'timescaledb'), or None before init."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT value FROM fleetscope_meta WHERE key = 'mode'").fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return row[0] if row else None


def init_database(dsn: str, *, mode: str = "auto", directory: Path = MIGRATIONS_DIR) -> InitResult:
    """Apply the missing migrations to the database at ``dsn``; return the mode and what was applied.

    ``mode`` is 'auto' (TimescaleDB when the server has the extension),
    'plain' or 'timescaledb'. Running it again applies nothing.
    """
    if mode not in ("auto", *MODES):
        raise FleetscopeError(f"--mode must be auto, plain or timescaledb, not {mode!r}")
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            conn.execute(BOOTSTRAP_SQL)
            recorded = database_mode(conn)
            if recorded is not None and mode != "auto" and mode != recorded:
                raise FleetscopeError(
                    f"this database was initialised in {recorded} mode; it cannot be re-initialised as {mode}"
                )
            chosen = recorded or _choose_mode(conn, mode)
            if chosen == "timescaledb":
                _ensure_timescaledb(conn)
            result = InitResult(mode=chosen)
            _apply(conn, migrations_for(chosen, directory), chosen, first=recorded is None, result=result)
            return result
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def _choose_mode(conn: psycopg.Connection, requested: str) -> str:
    if requested != "auto":
        return requested
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return "timescaledb" if row else "plain"


def _ensure_timescaledb(conn: psycopg.Connection) -> None:
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as err:
        detail = (err.diag.message_primary or str(err)).strip()
        raise FleetscopeError(
            f"the server has TimescaleDB but the extension cannot be created: {detail} "
            "(add timescaledb to shared_preload_libraries, or use --mode plain)"
        ) from None
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]
    numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:2])
    if numbers < MIN_TIMESCALEDB:
        raise FleetscopeError(
            f"TimescaleDB {version} is older than {'.'.join(map(str, MIN_TIMESCALEDB))}, which fleetscope needs "
            "(ALTER EXTENSION timescaledb UPDATE, or use --mode plain)")


def _apply(conn: psycopg.Connection, migrations: list[Migration], mode: str, *, first: bool,
           result: InitResult) -> None:
    applied = {row[0]: row for row in conn.execute(
        "SELECT version, name, variant, checksum FROM schema_migrations ORDER BY version")}
    known = {m.version for m in migrations}
    newer = [v for v in applied if v not in known and v > max(known, default=0)]
    if newer:
        raise FleetscopeError(
            f"the database schema has migration {max(newer):04d}, newer than this fleetscope knows "
            f"({max(known):04d}); upgrade fleetscope"
        )
    for migration in migrations:
        done = applied.get(migration.version)
        if done is not None:
            if done[3] != migration.checksum:
                raise FleetscopeError(
                    f"migration {migration.label} was applied from a different version of its file "
                    "(checksum mismatch); the schema and this fleetscope disagree"
                )
            continue
        try:
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, variant, checksum) VALUES (%s, %s, %s, %s)",
                    (migration.version, migration.name, migration.variant, migration.checksum))
                if first:
                    conn.execute("INSERT INTO fleetscope_meta (key, value) VALUES ('mode', %s)", (mode,))
                    first = False
        except psycopg.Error as err:
            detail = (err.diag.message_primary or str(err)).strip()
            raise FleetscopeError(
                f"migration {migration.label} failed and was rolled back, nothing of it is applied: {detail}"
            ) from None
        result.applied.append(migration.label)
