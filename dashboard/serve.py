"""``fleetscope dashboard``: the explorer behind gunicorn (or Flask's server for development)."""

from __future__ import annotations

import argparse
import logging
import os

from fleetscope import db
from fleetscope.config import env_int
from fleetscope.errors import FleetscopeError

log = logging.getLogger("fleetscope.dashboard")

DEFAULT_PORT = 8050
# gunicorn's advice is 2 x cores + 1 workers; the work here is mostly waiting
# on the cache or the database, so a few processes with threads each serve
# hundreds of visitors while the snapshot is computed once for all of them.
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 8
# The Flask config key holding the collector URL /operator sends changes to.
COLLECTOR_URL_KEY = "FLEETSCOPE_COLLECTOR_URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $FLEETSCOPE_DSN, else the embedded server)")
    parser.add_argument("--host", default=os.environ.get("FLEETSCOPE_DASHBOARD_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, help=f"default $FLEETSCOPE_DASHBOARD_PORT, else {DEFAULT_PORT}")
    parser.add_argument("--workers", type=int, help="gunicorn worker processes, which share one snapshot cache "
                        f"(default $FLEETSCOPE_DASHBOARD_WORKERS, else {DEFAULT_WORKERS})")
    parser.add_argument("--threads", type=int, help=f"threads per worker (default $FLEETSCOPE_DASHBOARD_THREADS, "
                        f"else {DEFAULT_THREADS})")
    parser.add_argument("--collector-url", help="the collector whose operator API /operator's changes go to "
                        "(default: $FLEETSCOPE_COLLECTOR_URL, else http://127.0.0.1:9300)")
    parser.add_argument("--cache-dir", default=os.environ.get("FLEETSCOPE_DASHBOARD_CACHE_DIR"),
                        help="the workers' shared cache (default: a per-database directory under the temp dir)")


def build(dsn: str, cache_dir: str | None = None, *, collector_url: str | None = None):
    """The WSGI app (Flask) of the dashboard for ``dsn``; /operator's changes go to ``collector_url``."""
    from pathlib import Path

    from dashboard.app import create_app
    from dashboard.service import Service
    from fleetscope.collector_client import collector_url as checked_url

    server = create_app(Service(dsn, cache_dir=Path(cache_dir) if cache_dir else None)).server
    server.config[COLLECTOR_URL_KEY] = checked_url(collector_url)  # checked once, at start
    # Dash registers the JavaScript libraries it may serve while it renders
    # its first page shell; a worker that never rendered one answers 500 for
    # them. Render one here, before gunicorn forks, so every worker knows them
    # (an unknown path: no database work).
    server.test_client().get("/_fleetscope-warm-up")
    return server


def run(args: argparse.Namespace) -> int:
    dsn = db.resolve_dsn(args.dsn)
    with db.connect(dsn) as conn:
        from fleetscope.migrate import database_mode

        if database_mode(conn) is None:
            raise FleetscopeError(f"the database at {db.describe_dsn(dsn)} has no fleetscope schema; "
                                  "run 'fleetscope db init'")
    port = args.port if args.port is not None else env_int("FLEETSCOPE_DASHBOARD_PORT", DEFAULT_PORT, lo=1, hi=65535)
    workers = args.workers if args.workers is not None else env_int("FLEETSCOPE_DASHBOARD_WORKERS", DEFAULT_WORKERS,
                                                                    lo=1, hi=64)
    threads = args.threads if args.threads is not None else env_int("FLEETSCOPE_DASHBOARD_THREADS", DEFAULT_THREADS,
                                                                    lo=1, hi=256)
    if not (1 <= port <= 65535 and 1 <= workers <= 64 and 1 <= threads <= 256):
        raise FleetscopeError("--port must be 1-65535, --workers 1-64 and --threads 1-256")
    wsgi = build(dsn, args.cache_dir, collector_url=args.collector_url)
    from gunicorn.app.base import BaseApplication

    class Gunicorn(BaseApplication):
        def load_config(self):
            for key, value in {"bind": f"{args.host}:{port}", "workers": workers,
                               "threads": threads, "worker_class": "gthread", "timeout": 120,
                               "accesslog": None, "errorlog": "-", "loglevel": "warning",
                               "proc_name": "fleetscope-dashboard"}.items():
                self.cfg.set(key, value)

        def load(self):
            return wsgi

    print(f"fleetscope dashboard on http://{args.host}:{port}/ "
          f"({workers} workers x {threads} threads, database {db.describe_dsn(dsn)})", flush=True)
    Gunicorn().run()
    return 0
