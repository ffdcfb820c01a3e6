"""The fleet simulator: thousands of simulated GPU hosts from one process.

``fleetscope simulate`` serves an :class:`exporters.sim.SimFleet` for the
collector to scrape (pull mode), or pushes it to a collector (push mode);
docs/simulate.md has the how-to.

- Pull: one aiohttp server on ``HOST:PORT`` serves ``/metrics/{index}`` and
  ``/metrics/{host_id}``, each exactly ``fleet.render(host, now)``. A host
  that is down (``fleet.is_up`` False) answers ``503`` by default, or, with
  ``down="close"``, has its connection closed without a response (what a
  crashed exporter looks like to a scraper). ``targets.json`` lists the hosts
  in Prometheus ``file_sd`` format, one target per host with its
  ``__metrics_path__``, and :func:`register_fleet` registers them as
  fleetscope nodes with their ``scrape_url``.
- Push: every host is registered as a node (through the collector's
  ``POST /api/v1/nodes`` with an operator token, or directly in the database)
  and POSTs its gzip'd text to ``--push URL`` with its own node token every
  interval, starting at a random point of the first interval. Each host
  also runs a proof client (exporters/proving.py) with its own prover
  (``SimFleet.prover``: NumPy at the speed of its simulated GPUs, or a
  cheater's), so the collector's proof-of-GPU rounds see honest hosts pass
  and cheaters fail; ``--no-prove`` turns it off.

A scenario (JSON, the format of :meth:`SimFleet.from_scenario`: a list of
``{profile, count, gpus, model, hired_fraction}``) chooses the hosts; the
default is :data:`DEMO_SCENARIO`.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import aiohttp
from aiohttp import web

from exporters.sim import SimFleet

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import psycopg

    from exporters.proving import ProofClient

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9400
DEFAULT_SEED = 1
DEFAULT_INTERVAL_S = 15
DEFAULT_OPERATOR = "simulated-fleet"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DOWN_MODES = ("503", "close")
# gzip level for responses and pushes: level 1 is ~3x cheaper than the default
# 6 on exposition text and only ~15 % larger; the simulator's CPU is what
# limits how many hosts one process can serve.
GZIP_LEVEL = 1
# Pushes in flight at once (push mode), and each push's timeout.
PUSH_CONCURRENCY = 256
PUSH_TIMEOUT_S = 10.0
# Nodes registered per transaction by register_fleet.
REGISTER_BATCH = 1000

# The demo fleet: mostly healthy hosts, some hired, and a few of every
# integrity and liveness case the dashboard shows (docs/exporter.md, profiles).
DEMO_SCENARIO: list[dict[str, Any]] = [
    {"profile": "healthy", "count": 40, "gpus": 8, "model": "NVIDIA A100-SXM4-80GB", "hired_fraction": 0.6},
    {"profile": "healthy", "count": 20, "gpus": 8, "model": "NVIDIA H100 80GB HBM3", "hired_fraction": 0.7},
    {"profile": "healthy", "count": 40, "gpus": 1, "model": "NVIDIA GeForce RTX 4090", "hired_fraction": 0.3},
    {"profile": "healthy", "count": 10, "gpus": 4, "model": "NVIDIA L40S", "hired_fraction": 0.5},
    {"profile": "flapping", "count": 6, "gpus": 2, "model": "NVIDIA GeForce RTX 3090", "hired_fraction": 0.0},
    {"profile": "gpu_lost", "count": 2, "gpus": 8, "hired_fraction": 0.5},
    {"profile": "unsupported", "count": 4, "gpus": 2, "hired_fraction": 0.0},
    {"profile": "virtualized", "count": 2, "gpus": 4, "hired_fraction": 0.0},
    {"profile": "cloned_uuid", "count": 2, "gpus": 2, "hired_fraction": 0.0},
    {"profile": "spec_mismatch", "count": 2, "gpus": 1, "hired_fraction": 0.0},
    {"profile": "cloned_telemetry", "count": 2, "gpus": 2, "hired_fraction": 0.0},
    # Cheaters at the proof of GPU (push mode proves; docs/simulate.md).
    {"profile": "proof_garbage", "count": 1, "gpus": 2, "hired_fraction": 0.0},
    {"profile": "proof_slow", "count": 1, "gpus": 1, "hired_fraction": 0.0},
    {"profile": "proof_one_for_many", "count": 1, "gpus": 4, "hired_fraction": 0.0},
    {"profile": "proof_silent", "count": 1, "gpus": 1, "hired_fraction": 0.0},
]


def load_fleet(seed: int = DEFAULT_SEED, scenario: str | Path | Sequence[dict[str, Any]] | None = None
               ) -> SimFleet:
    """The fleet of ``scenario`` (a JSON file or its list), else the demo fleet."""
    return SimFleet.from_scenario(seed, DEMO_SCENARIO if scenario is None else scenario)


def metrics_path(index: int) -> str:
    """The path host ``index`` is served on."""
    return f"/metrics/{index}"


# -- pull mode: the server ---------------------------------------------------


class BodyRing:
    """Pre-rendered gzip'd bodies for load tests: ``ring`` per host, served in turn.

    Rendering costs ~0.35 ms per 8-GPU host and gzip ~0.1 ms more, so one
    process serving live renders tops out near 1,500 scrapes/s on a 2-core
    box, below what a collector benchmark needs. With a ring, the body served
    at ``t`` is the one rendered at ``t0 + (floor(t / interval) mod ring) *
    interval``: values still change from one scrape to the next, as the
    parser's warm path expects, but serving costs only the HTTP work.
    """

    def __init__(self, fleet: SimFleet, *, ring: int, interval_s: float, t0: float) -> None:
        self.ring = ring
        self.interval_s = interval_s
        self.bodies: list[list[bytes]] = [
            [gzip.compress(fleet.render(i, t0 + j * interval_s), GZIP_LEVEL) for j in range(ring)]
            for i in range(len(fleet))
        ]

    def get(self, index: int, t: float) -> bytes:
        return self.bodies[index][int(t // self.interval_s) % self.ring]


def make_app(fleet: SimFleet, *, clock: Callable[[], float] = time.time, down: str = "503",
             delay_s: Callable[[int], float] | None = None, ring: BodyRing | None = None
             ) -> web.Application:
    """The aiohttp app serving ``fleet`` on ``/metrics/{index or host_id}``.

    ``delay_s(index)``, when given, delays that host's answer (slow hosts in
    tests); ``ring`` serves pre-rendered bodies (load tests).
    """
    if down not in DOWN_MODES:
        raise ValueError(f"down must be one of {DOWN_MODES}, got {down!r}")

    async def metrics(request: web.Request) -> web.StreamResponse:
        key = request.match_info["host"]
        try:
            index = fleet.index(int(key) if key.isdecimal() else key)
        except (KeyError, IndexError):
            raise web.HTTPNotFound(text=f"no simulated host {key!r}\n") from None
        if delay_s is not None:
            delay = delay_s(index)
            if delay > 0:
                await asyncio.sleep(delay)
        t = clock()
        if not fleet.is_up(index, t):
            if down == "close":
                # No answer at all: the scraper sees the connection end.
                request.transport.close()
                raise web.HTTPServiceUnavailable()  # never sent: the transport is gone
            raise web.HTTPServiceUnavailable(text="simulated host is down\n")
        gz = "gzip" in request.headers.get("Accept-Encoding", "")
        if ring is not None:
            body = ring.get(index, t)
            if not gz:
                body = gzip.decompress(body)
        else:
            body = fleet.render(index, t)
            if gz:
                body = gzip.compress(body, GZIP_LEVEL)
        headers = {"Content-Type": CONTENT_TYPE}
        if gz:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=f"fleetscope simulated fleet: {len(fleet)} hosts on /metrics/{{0..{len(fleet) - 1}}}\n")

    app = web.Application()
    app.router.add_get("/metrics/{host}", metrics)
    app.router.add_get("/", index)
    return app


class SimServer:
    """``async with SimServer(fleet) as server:`` serves ``fleet`` on ``server.base_url``."""

    def __init__(self, fleet: SimFleet, *, host: str = DEFAULT_HOST, port: int = 0, **app_options: Any) -> None:
        self.fleet = fleet
        self.host = host
        self.port = port
        self._app = make_app(fleet, **app_options)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, index: int) -> str:
        return self.base_url + metrics_path(index)

    async def __aenter__(self) -> SimServer:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=True)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]  # the port the OS chose
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def file_sd(fleet: SimFleet, address: str, *, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Prometheus ``file_sd_configs`` groups: one target per host, ``address`` = ``host:port``."""
    groups = []
    for i, spec in enumerate(fleet.hosts):
        group_labels = {"__metrics_path__": metrics_path(i), "host_id": spec.host_id,
                        "profile": spec.profile}
        group_labels.update(labels or {})
        groups.append({"targets": [address], "labels": group_labels})
    return groups


def write_targets(path: str | Path, fleet: SimFleet, address: str) -> Path:
    """Write ``file_sd`` targets for ``fleet`` served at ``address`` to ``path`` (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(file_sd(fleet, address), indent=1) + "\n")
    tmp.replace(path)  # file_sd re-reads on change; never let it see half a file
    return path


def register_fleet(conn: psycopg.Connection, fleet: SimFleet, base_url: str | None,
                   operator_name: str = DEFAULT_OPERATOR, *, interval_s: int = DEFAULT_INTERVAL_S
                   ) -> list[int]:
    """Register every host of ``fleet`` as a node of ``operator_name``; return the node ids in host order.

    Node names are the host ids. ``scrape_url`` is ``base_url + /metrics/{index}``
    (None for push-only nodes). The operator is created if missing; hosts
    already registered under it keep their node (their scrape_url and interval
    are updated), so running the simulator again on another port works.
    """
    return [node_id for node_id, _token in _register(conn, fleet, base_url, operator_name, interval_s)]


def _register(conn: psycopg.Connection, fleet: SimFleet, base_url: str | None, operator_name: str,
              interval_s: int) -> list[tuple[int, str | None]]:
    """(node_id, node_token or None when the node already existed) per host."""
    from fleetscope.registry import create_operator, register_node

    row = conn.execute("SELECT operator_id FROM operators WHERE name = %s", (operator_name,)).fetchone()
    operator_id = row[0] if row else create_operator(conn, operator_name)[0]
    existing = dict(conn.execute("SELECT name, node_id FROM nodes WHERE operator_id = %s",
                                 (operator_id,)).fetchall())
    out: list[tuple[int, str | None]] = []
    base = base_url.rstrip("/") if base_url else None
    for start in range(0, len(fleet), REGISTER_BATCH):
        with conn.transaction():
            for i in range(start, min(start + REGISTER_BATCH, len(fleet))):
                name = fleet.hosts[i].host_id
                url = base + metrics_path(i) if base else None
                node_id = existing.get(name)
                if node_id is None:
                    new = register_node(conn, operator_id=operator_id, name=name, scrape_url=url,
                                        interval_s=interval_s)
                    out.append((new.node_id, new.node_token))
                else:
                    conn.execute("UPDATE nodes SET scrape_url = %s, interval_s = %s WHERE node_id = %s",
                                 (url, interval_s, node_id))
                    out.append((node_id, None))
    return out


def prewarm(fleet: SimFleet, t: float | None = None) -> None:
    """Render every host once, so no scrape pays for building a host's template (~4 ms)."""
    t = time.time() if t is None else t
    for i in range(len(fleet)):
        fleet.render(i, t)


# -- push mode ---------------------------------------------------------------


async def register_via_api(session: aiohttp.ClientSession, collector_url: str, operator_token: str,
                           fleet: SimFleet, *, interval_s: int = DEFAULT_INTERVAL_S,
                           node_ids: list[int] | None = None) -> list[str]:
    """Register each host through ``POST /api/v1/nodes``; return the node tokens in host order.

    ``node_ids``, when given, receives the node ids in the same order.
    """
    tokens = []
    headers = {"Authorization": f"Bearer {operator_token}"}
    for spec in fleet.hosts:
        body = {"name": spec.host_id, "scrape_url": None, "interval_s": interval_s}
        async with session.post(f"{collector_url}/api/v1/nodes", json=body, headers=headers) as resp:
            if resp.status != 201:
                raise RuntimeError(f"registering {spec.host_id}: HTTP {resp.status} {await resp.text()}")
            created = await resp.json()
            tokens.append(created["node_token"])
            if node_ids is not None:
                node_ids.append(created["node_id"])
    return tokens


async def push_fleet(fleet: SimFleet, push_url: str, tokens: Sequence[str], *,
                     interval_s: float = DEFAULT_INTERVAL_S, duration_s: float | None = None,
                     clock: Callable[[], float] = time.time, seed: int = DEFAULT_SEED,
                     session: aiohttp.ClientSession | None = None) -> dict[int, int]:
    """Push every host to ``push_url`` every ``interval_s`` until cancelled or ``duration_s`` passes.

    Each host starts at a random point of the first interval (seeded), skips
    the intervals in which it is down, and sends gzip'd text with its own
    token. Returns the count of pushes by HTTP status (0 for transport errors).
    """
    if len(tokens) != len(fleet):
        raise ValueError(f"{len(tokens)} tokens for {len(fleet)} hosts")
    rng = random.Random(seed)
    jitter = [rng.uniform(0, interval_s) for _ in range(len(fleet))]
    results: dict[int, int] = {}
    sem = asyncio.Semaphore(PUSH_CONCURRENCY)
    loop = asyncio.get_running_loop()
    end = None if duration_s is None else loop.time() + duration_s
    own = session is None
    session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PUSH_TIMEOUT_S))

    async def one(i: int) -> None:
        next_at = loop.time() + jitter[i]
        headers = {"Authorization": f"Bearer {tokens[i]}", "Content-Type": CONTENT_TYPE,
                   "Content-Encoding": "gzip"}
        while end is None or next_at < end:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval_s
            t = clock()
            if not fleet.is_up(i, t):
                continue
            body = gzip.compress(fleet.render(i, t), GZIP_LEVEL)
            async with sem:
                try:
                    async with session.post(push_url, data=body, headers=headers) as resp:
                        status = resp.status
                        await resp.read()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    status = 0
            results[status] = results.get(status, 0) + 1

    try:
        await asyncio.gather(*(one(i) for i in range(len(fleet))))
    finally:
        if own:
            await session.close()
    return results


def start_provers(fleet: SimFleet, collector_url: str, tokens: Sequence[str], *,
                  node_ids: Sequence[int | None] | None = None) -> list[ProofClient]:
    """Start a proof client per host of ``fleet`` (a thread each, long-polling ``collector_url``).

    Each proves with ``fleet.prover(i)``; stop them with :func:`stop_provers`.
    ``node_ids`` (host order) is only needed when the collector's challenge
    does not carry the node's id.
    """
    from exporters.proving import start_clients

    return start_clients(collector_url, list(tokens), [fleet.prover(i) for i in range(len(fleet))],
                         node_ids=list(node_ids) if node_ids is not None else None)


def stop_provers(clients: Sequence[ProofClient]) -> dict[str, int]:
    """Stop the clients (their long polls end on their own: daemon threads); the verdicts they got, summed."""
    totals: dict[str, int] = {}
    for client in clients:
        client.stop(timeout=0)
        for verdict, count in client.verdicts.items():
            totals[verdict] = totals.get(verdict, 0) + count
    return totals


# -- the command ---------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fleetscope simulate`` flags."""
    parser.add_argument("--scenario", type=Path, help="scenario JSON (default: the demo fleet)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--interval", type=int, default=DEFAULT_INTERVAL_S,
                        help="node interval, s (5 to 3600, divides an hour)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="pull mode: listen address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="pull mode: listen port")
    parser.add_argument("--down", choices=DOWN_MODES, default="503",
                        help="pull mode: how a down host answers (503, or close the connection)")
    parser.add_argument("--targets-file", type=Path, help="pull mode: write Prometheus file_sd targets here")
    parser.add_argument("--register", action="store_true",
                        help="register the hosts as nodes in the database (--dsn)")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $FLEETSCOPE_DSN, else the embedded server)")
    parser.add_argument("--operator", default=DEFAULT_OPERATOR, help="operator name for --register")
    parser.add_argument("--prewarm", action="store_true", help="render every host once before serving")
    parser.add_argument("--ring", type=int, default=0,
                        help="load tests: serve N pre-rendered bodies per host in turn (0: render live)")
    parser.add_argument("--push", metavar="URL", help="push mode: the collector's push URL "
                        "(e.g. http://127.0.0.1:9300/api/v1/push)")
    parser.add_argument("--operator-token", help="push mode: register hosts through the collector's API "
                        "with this operator token (else through --dsn)")
    parser.add_argument("--tokens-file", type=Path,
                        help="push mode: node tokens (JSON list, host order); reused when it exists")
    parser.add_argument("--no-prove", dest="prove", action="store_false",
                        help="push mode: the hosts do not answer proof-of-GPU challenges")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")


def _check(args: argparse.Namespace) -> None:
    if not (5 <= args.interval <= 3600 and 3600 % args.interval == 0):
        raise SystemExit(f"--interval {args.interval}: must be 5 to 3600 s and divide an hour")
    if not 0 <= args.port <= 65535:
        raise SystemExit(f"--port {args.port}: not a port")
    if args.ring < 0:
        raise SystemExit(f"--ring {args.ring}: must be >= 0")
    if args.push and urlparse(args.push).scheme not in ("http", "https"):
        raise SystemExit(f"--push must be an http(s) URL, got {args.push!r}")


async def run(args: argparse.Namespace) -> int:
    """Run ``fleetscope simulate`` with parsed ``args`` until cancelled or ``--duration`` passes."""
    _check(args)
    fleet = load_fleet(args.seed, args.scenario)
    if args.push:
        return await _run_push(args, fleet)
    ring = None
    if args.ring:
        log.info("pre-rendering %d bodies for each of %d hosts", args.ring, len(fleet))
        ring = BodyRing(fleet, ring=args.ring, interval_s=args.interval, t0=time.time())
    elif args.prewarm:
        prewarm(fleet)
    async with SimServer(fleet, host=args.host, port=args.port, down=args.down, ring=ring) as server:
        address = f"{args.host}:{server.port}"
        if args.targets_file:
            write_targets(args.targets_file, fleet, address)
        if args.register:
            from fleetscope import db

            with db.connect(db.resolve_dsn(args.dsn), autocommit=True) as conn:
                ids = register_fleet(conn, fleet, server.base_url, args.operator, interval_s=args.interval)
            print(f"registered {len(ids)} nodes of operator {args.operator!r}", file=sys.stderr)
        print(f"serving {len(fleet)} simulated hosts on {server.base_url}/metrics/{{0..{len(fleet) - 1}}}",
              file=sys.stderr, flush=True)
        await _wait(args.duration)
    return 0


async def _run_push(args: argparse.Namespace, fleet: SimFleet) -> int:
    tokens: list[str] | None = None
    node_ids: list[int] | None = None
    if args.tokens_file and args.tokens_file.exists():
        tokens = json.loads(args.tokens_file.read_text())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PUSH_TIMEOUT_S)) as session:
        if tokens is None:
            if args.operator_token:
                parts = urlparse(args.push)
                node_ids = []
                tokens = await register_via_api(session, f"{parts.scheme}://{parts.netloc}",
                                                args.operator_token, fleet, interval_s=args.interval,
                                                node_ids=node_ids)
            else:
                from fleetscope import db

                with db.connect(db.resolve_dsn(args.dsn), autocommit=True) as conn:
                    registered = _register(conn, fleet, None, args.operator, args.interval)
                if any(token is None for _, token in registered):
                    raise SystemExit(f"operator {args.operator!r} already has nodes for these hosts and their "
                                     "tokens are not stored; pass the --tokens-file written when they were "
                                     "registered, or another --operator")
                tokens = [token for _, token in registered]
                node_ids = [node_id for node_id, _ in registered]
            if args.tokens_file:
                args.tokens_file.write_text(json.dumps(tokens))
                args.tokens_file.chmod(0o600)
        print(f"pushing {len(fleet)} simulated hosts to {args.push} every {args.interval} s",
              file=sys.stderr, flush=True)
        provers: list[ProofClient] = []
        if args.prove:
            from exporters.proving import proof_base

            provers = start_provers(fleet, proof_base(args.push), tokens, node_ids=node_ids)
        try:
            results = await push_fleet(fleet, args.push, tokens, interval_s=args.interval,
                                       duration_s=args.duration, seed=args.seed, session=session)
        finally:
            verdicts = stop_provers(provers)
    print(f"pushes by HTTP status: {json.dumps(results, sort_keys=True)}", file=sys.stderr)
    if args.prove:
        print(f"proof verdicts: {json.dumps(verdicts, sort_keys=True)}", file=sys.stderr)
    return 0


async def _wait(duration: float | None) -> None:
    if duration is None:
        await asyncio.Event().wait()  # until cancelled (Ctrl-C)
    else:
        await asyncio.sleep(duration)


def main(argv: list[str] | None = None) -> int:
    """``python -m exporters.simfleet``: the same as ``fleetscope simulate``."""
    parser = argparse.ArgumentParser(prog="fleetscope simulate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
