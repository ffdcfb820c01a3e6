"""The ``fleetscope`` command (DESIGN.md, Contract: CLI).

Every subcommand takes ``--dsn``, which falls back to FLEETSCOPE_DSN and then
to the embedded server. Errors print one line naming the problem and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from fleetscope.errors import FleetscopeError


def _dsn_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $FLEETSCOPE_DSN, else the embedded server)")


def _parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetscope", description="fleetscope: monitoring and a verifiable public "
                                     "explorer for decentralised GPU networks")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="the database").add_subparsers(dest="db_command", required=True)
    init = db.add_parser("init", help="create or upgrade the schema (idempotent)")
    _dsn_arg(init)
    init.add_argument("--mode", default="auto", choices=("auto", "plain", "timescaledb"),
                      help="auto: TimescaleDB when the server has it (decided at the first init)")
    db.add_parser("stop", help="stop the embedded server")
    db.add_parser("status", help="show the embedded server's data directory, port and state")

    operator = sub.add_parser("operator", help="operators").add_subparsers(dest="op_command", required=True)
    create = operator.add_parser("create", help="create an operator and print its token")
    create.add_argument("name")
    _dsn_arg(create)

    from collector import demo, settings, simulate

    settings.add_arguments(sub.add_parser("collector", help="run the collector: push, scrape, jobs and nodes API"))
    simulate.add_arguments(sub.add_parser("simulate", help="serve or push a simulated fleet"))
    from dashboard import serve as dashboard_serve

    dashboard_serve.add_arguments(sub.add_parser("dashboard", help="serve the public explorer and its JSON API"))
    demo.add_arguments(sub.add_parser("demo", help="the embedded database, a simulated fleet, the collector and the explorer"))

    snap = sub.add_parser("snapshot", help="print the fleet snapshot as JSON")
    _dsn_arg(snap)
    snap.add_argument("--as-of", type=_parse_time, help="ISO 8601 time (default: the current 15 s tick)")

    ver = sub.add_parser("verify", help="recompute the published numbers from a downloaded data bundle alone")
    ver.add_argument("bundle", help="a bundle file (.zip) as published with a snapshot")
    ver.add_argument("--verbose", action="store_true", help="list every per-node number, not only mismatches")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except FleetscopeError as err:
        print(f"fleetscope: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    from fleetscope import db

    if args.command in ("collector", "simulate", "demo"):
        return _run_service(args)
    if args.command == "verify":
        return _verify(args)
    if args.command == "dashboard":
        from dashboard.serve import run

        return run(args)

    if args.command == "db" and args.db_command in ("stop", "status"):
        from fleetscope.embedded import embedded_server

        server = embedded_server()
        if args.db_command == "stop":
            print("stopped" if server.stop() else "not running")
        else:
            port = server.running_port()
            state = f"running on 127.0.0.1:{port}" if port else "not running"
            print(f"data directory: {server.data_dir}\nserver: {state}")
        return 0

    dsn = db.resolve_dsn(args.dsn)
    if args.command == "db":
        from fleetscope.migrate import init_database

        result = init_database(dsn, mode=args.mode)
        applied = ", ".join(result.applied) if result.applied else "nothing to apply, schema is current"
        print(f"database {db.describe_dsn(dsn)} ({result.mode} mode): {applied}")
        return 0
    with db.connect(dsn) as conn:
        _require_schema(conn, dsn)
        if args.command == "operator":
            from fleetscope.registry import create_operator

            operator_id, token = create_operator(conn, args.name)
            print(f"operator {operator_id} {args.name!r} created; its token (shown once):", file=sys.stderr)
            print(token)
        elif args.command == "snapshot":
            import json

            from fleetscope.snapshot import stored_snapshot_from_dsn

            snap = stored_snapshot_from_dsn(dsn, as_of=args.as_of)
            print(json.dumps(snap.as_dict(), indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Verify a bundle with no database: 0 when every number matches, 1 when one does not."""
    from pathlib import Path

    from fleetscope.verify import verify

    try:
        report = verify(Path(args.bundle))
    except ValueError as err:
        raise FleetscopeError(str(err)) from None
    for line in report.lines(verbose=args.verbose):
        print(line)
    return 0 if report.ok else 1


def _run_service(args: argparse.Namespace) -> int:
    """The long-running commands: log to stderr, run until Ctrl-C or SIGTERM."""
    import asyncio
    import logging

    level = logging.INFO if args.command == "collector" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "collector":
        from collector.app import serve
        from collector.settings import from_args

        serve(from_args(args))  # not asyncio.run: a SIGTERM must not wait on a frozen database
        return 0
    if args.command == "simulate":
        from collector.simulate import run

        return asyncio.run(run(args))
    from collector.demo import run

    return asyncio.run(run(args))


def _require_schema(conn, dsn: str) -> None:
    from fleetscope.db import describe_dsn
    from fleetscope.migrate import database_mode

    if database_mode(conn) is None:
        raise FleetscopeError(f"the database at {describe_dsn(dsn)} has no fleetscope schema; run 'fleetscope db init'")


if __name__ == "__main__":
    sys.exit(main())
