"""The ``fleetscope`` command (DESIGN.md, Contract: CLI).

The database commands take ``--dsn``, which falls back to FLEETSCOPE_DSN and
then to the embedded server. An operator's commands (``node``, ``channel``)
are clients of the collector's HTTP API instead (fleetscope/collector_client.py:
one write path, with its validation, SSRF refusal and ownership rules), with
the operator token from ``--token`` or FLEETSCOPE_OPERATOR_TOKEN. Errors print
one line naming the problem and exit 2.
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

    _operator_commands(sub)

    from collector import demo, settings
    from exporters import simfleet

    settings.add_arguments(sub.add_parser("collector", help="run the collector: push, scrape, jobs and nodes API"))
    simfleet.add_arguments(sub.add_parser("simulate", help="serve or push a simulated fleet"))
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


CHANNEL_KINDS = ("webhook", "slack", "discord", "email")


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", help="operator token (default: $FLEETSCOPE_OPERATOR_TOKEN; the environment keeps "
                        "it out of the process list)")
    parser.add_argument("--collector", help="the collector's URL (default: $FLEETSCOPE_COLLECTOR_URL, else "
                        "http://127.0.0.1:9300)")


def _operator_commands(sub) -> None:  # type: ignore[no-untyped-def]
    node = sub.add_parser("node", help="your nodes (through the collector's API)").add_subparsers(
        dest="node_command", required=True)
    add = node.add_parser("add", help="register a node and print its token (shown once)")
    add.add_argument("name")
    add.add_argument("--scrape-url", help="the exporter's /metrics URL for the collector to scrape (omit for a "
                     "node that pushes)")
    add.add_argument("--interval-s", type=int, help="expected seconds between reports (default 15; divides 3600)")
    add.add_argument("--grace-s", type=int, help="seconds without a report before the node is down "
                     "(default 3 x interval)")
    _client_args(add)
    _client_args(node.add_parser("list", help="your nodes with their state, uptime and alert state"))
    for verb, text in (("pause", "pause a node's alerts (its counts and uptime are unchanged)"),
                       ("resume", "resume a paused node's alerts")):
        p = node.add_parser(verb, help=text)
        p.add_argument("node_id", type=int)
        _client_args(p)

    channel = sub.add_parser("channel", help="your alert channels (through the collector's API)").add_subparsers(
        dest="channel_command", required=True)
    add = channel.add_parser("add", help="add an alert channel for all your nodes")
    add.add_argument("kind", choices=CHANNEL_KINDS)
    add.add_argument("target", help="a webhook/Slack/Discord URL, or an email address")
    _client_args(add)
    _client_args(channel.add_parser("list", help="your alert channels"))
    for verb, text in (("remove", "remove an alert channel"),
                       ("test", "send a test message to a channel now (exit 1 if it was not delivered)")):
        p = channel.add_parser(verb, help=text)
        p.add_argument("channel_id", type=int)
        _client_args(p)


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
    if args.command in ("node", "channel"):
        return _operator_command(args)
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


def _operator_command(args: argparse.Namespace) -> int:
    """``fleetscope node ...`` / ``fleetscope channel ...``: one call to the collector's operator API."""
    from fleetscope.collector_client import CollectorClient, collector_url, operator_token

    client = CollectorClient(collector_url(args.collector), operator_token(args.token))
    if args.command == "node":
        if args.node_command == "add":
            node = client.register_node(args.name, scrape_url=args.scrape_url, interval_s=args.interval_s,
                                        grace_s=args.grace_s)
            print(f"node {node['node_id']} {node['name']!r} registered (interval {node['interval_s']} s, grace "
                  f"{node['grace_s']} s); its token (shown once, stored only hashed):", file=sys.stderr)
            print(node["node_token"])
        elif args.node_command == "list":
            nodes = client.view()["nodes"]
            print(f"{'node_id':>8}  {'state':<6} {'paused':<6} {'uptime_24h':>10}  {'last report':<28} name")
            for n in nodes:
                up = "-" if n["uptime_24h"] is None else f"{100 * n['uptime_24h']:.2f}%"
                print(f"{n['node_id']:>8}  {n['state']:<6} {'yes' if n['paused'] else 'no':<6} {up:>10}  "
                      f"{n['last_ok_at'] or 'never':<28} {n['name']}")
        else:
            node = client.set_paused(args.node_id, args.node_command == "pause")
            print(f"node {node['node_id']} {node['name']!r} {'paused' if node['paused'] else 'resumed'}")
        return 0
    if args.channel_command == "add":
        made = client.add_channel(args.kind, args.target)
        print(f"channel {made['channel_id']} ({made['kind']} {made['target']}) added")
    elif args.channel_command == "list":
        for c in client.channels():
            print(f"{c['channel_id']:>8}  {c['kind']:<8} {c['target']}")
    elif args.channel_command == "remove":
        client.remove_channel(args.channel_id)
        print(f"channel {args.channel_id} removed")
    else:
        result = client.test_channel(args.channel_id)
        if not result["ok"]:
            print(f"fleetscope: test message to channel {args.channel_id} ({result['kind']} {result['target']}) "
                  f"not delivered: {result['error']}", file=sys.stderr)
            return 1
        print(f"test message delivered to channel {args.channel_id} ({result['kind']} {result['target']})")
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
        from collector.process import serve
        from collector.settings import from_args

        serve(from_args(args))  # not asyncio.run: a SIGTERM must not wait on a frozen database
        return 0
    if args.command == "simulate":
        from exporters.simfleet import run

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
