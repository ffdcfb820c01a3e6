"""``fleetscope-exporter``: serve this host's GPUs on /metrics, and push them.

Flags are parsed and checked once at start-up; a bad value stops the program
with a message naming the flag. In push mode the exporter also proves its
GPUs when the collector challenges them (exporters/proving.py; ``--no-prove``
turns it off, ``--prover`` picks the backend). ``--token`` may come from the environment
(FLEETSCOPE_EXPORTER_TOKEN) so it does not show in ``ps``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from prometheus_client import CollectorRegistry, start_http_server

from exporters.gpu_collector import DEFAULT_CACHE_SECONDS, GpuCollector
from exporters.proving import ProofClient, proof_base
from exporters.push import DEFAULT_INTERVAL_S, Pusher
from exporters.sim import ALL_PROFILES, MODELS, HostSpec, SimFleet, SimSource
from exporters.spool import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, Spool

if TYPE_CHECKING:
    from collections.abc import Sequence

    from exporters.gpu_collector import Source
    from exporters.prover import Prover

log = logging.getLogger("fleetscope-exporter")

DEFAULT_PORT = 9835  # nvidia_gpu_exporter's port; dcgm-exporter uses 9400
TOKEN_ENV = "FLEETSCOPE_EXPORTER_TOKEN"


def default_spool_dir() -> Path:
    """$STATE_DIRECTORY (systemd) or ~/.local/state/fleetscope-exporter/spool."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "spool"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fleetscope-exporter" / "spool"


def _positive(kind: type[int] | type[float]):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetscope-exporter",
        description="Serve this host's GPU metrics (dcgm-exporter names) and optionally push them.",
    )
    p.add_argument("--backend", choices=("nvml", "sim", "apple"), default="nvml")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--push", metavar="URL", help="collector push URL, e.g. http://c:9300/api/v1/push")
    p.add_argument("--token", help=f"node token for --push (or ${TOKEN_ENV})")
    p.add_argument(
        "--interval", type=_positive(float), default=DEFAULT_INTERVAL_S, help="push interval, s"
    )
    p.add_argument("--spool-dir", type=Path, default=None, help="unsent payloads (push mode)")
    p.add_argument("--spool-max-files", type=_positive(int), default=DEFAULT_MAX_FILES)
    p.add_argument("--spool-max-bytes", type=_positive(int), default=DEFAULT_MAX_BYTES)
    p.add_argument("--no-prove", dest="prove", action="store_false",
                   help="push mode: do not answer the collector's proof-of-GPU challenges")
    p.add_argument("--prover", choices=("auto", "numpy", "cupy"), default="auto",
                   help="proof backend: cupy (NVIDIA GPUs, pip install 'fleetscope[cuda]'), numpy (CPU); "
                        "auto: cupy for --backend nvml when it is importable, else numpy")
    p.add_argument("--node-id", type=_positive(int), default=None,
                   help="this node's id for proofs, overriding the one the collector's challenge names")
    p.add_argument(
        "--cache", type=float, default=DEFAULT_CACHE_SECONDS, help="seconds a reading is reused"
    )
    sim = p.add_argument_group("sim backend")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--profile", choices=ALL_PROFILES, default="healthy")
    sim.add_argument("--gpus", type=_positive(int), default=8)
    sim.add_argument("--model", choices=sorted(MODELS), default=None)
    sim.add_argument("--hired", action="store_true", help="GPUs busy (70-100%% util)")
    sim.add_argument("--host-id", default=None, help="simulated host id (default: hostname)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def make_source(args: argparse.Namespace) -> Source:
    """Build the backend chosen by --backend."""
    if args.backend == "sim":
        import socket

        host_id = args.host_id or socket.gethostname()
        fleet = SimFleet(
            args.seed,
            [HostSpec(host_id, args.profile, args.gpus, model=args.model, hired=args.hired)],
        )
        return fleet.source(0)
    if args.backend == "apple":
        from exporters.apple import AppleSource

        return AppleSource()
    from exporters.nvml import NvmlSource

    return NvmlSource()


def make_prover(args: argparse.Namespace, source: Source) -> Prover:
    """The prover chosen by --prover for ``source``; RuntimeError when it cannot run here.

    The sim backend proves as its simulated host does (exporters/sim.py:
    NumPy at the speed of the GPUs it really has, or cheating as its profile
    says). CuPy finds each GPU through the source's UUID -> index mapping.
    """
    from exporters import prover

    if isinstance(source, SimSource):
        if args.prover == "cupy":
            raise RuntimeError("--prover cupy proves real GPUs; the sim backend proves with NumPy")
        return source.fleet.prover(source.host)
    kind = args.prover
    if kind == "auto":
        kind = "cupy" if args.backend == "nvml" and prover.cupy_available() else "numpy"
        if args.backend == "nvml" and kind == "numpy":
            log.warning("proving NVIDIA GPUs on the CPU with NumPy: it cannot meet a real GPU's deadline, so "
                        "proofs will fail; %s", prover.CUPY_MISSING)

    def devices() -> dict[str, int]:
        return {identity.uuid: identity.index for identity, _ in source.read().gpus}

    return prover.make_prover(kind, devices=devices)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be 0..65535, got {args.port}")
    token = args.token or os.environ.get(TOKEN_ENV)
    if args.push:
        url = urlparse(args.push)
        if url.scheme not in ("http", "https") or not url.netloc:
            p.error(f"--push must be an http(s) URL, got {args.push!r}")
        if not token:
            p.error(f"--push needs --token (or ${TOKEN_ENV})")
    elif args.token:
        p.error("--token is only used with --push")

    source = make_source(args)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuCollector(source, cache_seconds=args.cache))
    prover_client: ProofClient | None = None
    if args.push and args.prove:
        try:
            prover = make_prover(args, source)
        except RuntimeError as exc:
            p.error(f"--prover {args.prover}: {exc}")
        prover_client = ProofClient(proof_base(args.push), token, prover, node_id=args.node_id)
        registry.register(prover_client)
    pusher: Pusher | None = None
    if args.push:
        spool = Spool(
            args.spool_dir or default_spool_dir(),
            max_files=args.spool_max_files,
            max_bytes=args.spool_max_bytes,
        )
        pusher = Pusher(args.push, token, registry=registry, spool=spool, interval=args.interval)
        registry.register(pusher)

    server, _ = start_http_server(args.port, addr=args.host, registry=registry)
    log.info(
        "serving /metrics on %s:%d (backend %s)", args.host, server.server_port, args.backend
    )
    if pusher is not None:
        pusher.start()
        log.info("pushing to %s every %.0f s", args.push, args.interval)
    if prover_client is not None:
        prover_client.start()
        log.info("answering proof-of-GPU challenges from %s with the %s prover", prover_client.base_url,
                 prover_client.prover.backend)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    log.info("stopping")
    if prover_client is not None:
        prover_client.stop(timeout=0)  # a daemon thread: a long poll in flight is not waited for
    if pusher is not None:
        pusher.stop(timeout=5)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
