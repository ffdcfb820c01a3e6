"""The collector's aiohttp application: the factory and its lifecycle (collector/process.py runs it).

As in aiohttp's own examples (STYLE.md rule 9), ``make_app`` builds an
application whose state lives in typed ``web.AppKey``s and whose resources
are opened and closed in ``cleanup_ctx``, in this order (and closed in
reverse):

1. the database pool (registration, jobs, channels, token lookups, /healthz);
2. storage: the ``Appendable`` given to ``make_app`` (tests), or else the
   production writer (collector/writer.py), built on the pool's database;
3. the request handlers, which need both;
4. the components that run beside the HTTP side (``default_components``:
   the scraper, the maintenance loop and the alert loop), each an async
   context manager made from the app, so that they share its pool, storage
   and metrics registry.

A SIGTERM (issue 15, item 3) ends the process within SHUTDOWN_BUDGET_S
even with the database frozen: the listener closes at once, the writer stops
waiting on the database WRITER_GIVE_UP_S in (what it holds is spooled,
fsync'd, so the pushes waiting for it get their 204), requests in flight get
SHUTDOWN_TIMEOUT_S, each component COMPONENT_STOP_S and the pool
POOL_CLOSE_S. What does not end in its share is abandoned, not waited for:
psycopg answers a cancelled query by waiting up to 10 s for the server, and a
worker thread blocked on a frozen server never returns (``collector.process.serve``).

aiohttp's own request-body inflater is turned off (``auto_decompress``):
collector/requests.py inflates pushes itself, counting both sizes, so that a
gzip bomb is refused while it inflates rather than after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

import psycopg
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from psycopg_pool import AsyncConnectionPool

from collector import requests
from collector.addresses import AddressPolicy
from collector.auth import Authenticator
from collector.channels import AlertChannels
from collector.jobs import JobLedger
from collector.requests import Rejected
from collector.proof import Proofs
from collector.push import PushReceiver
from collector.remote_write import RemoteWriteReceiver
from collector.registration import Registration
from collector.selfmetrics import FleetSnapshotGauges, SelfMetrics
from collector.server import HEADER_TIMEOUT_S
from collector.settings import CollectorSettings
from fleetscope.errors import FleetscopeError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from collector.ingest import Appendable

    # Something that runs beside the HTTP side for the app's lifetime.
    Component = Callable[[web.Application], AbstractAsyncContextManager[object]]

log = logging.getLogger("fleetscope.collector")

# /healthz waits at most this long for the database: a load balancer's probe
# must get an answer well inside its own timeout.
HEALTH_TIMEOUT_S = 2.0
# Told to clients when the database is unreachable.
DATABASE_RETRY_AFTER_S = 5
# Routes whose whole handler is short database work: answered 503 at
# --db-timeout-s, never hung (issue 15). A push's token lookup has the same
# deadline (collector/auth.py); /healthz has its own; proof long-polls none.
DEADLINE_ROUTES = frozenset({"/api/v1/nodes", "/api/v1/nodes/{node_id}", "/api/v1/jobs", "/api/v1/channels",
                             "/api/v1/channels/{channel_id}", "/api/v1/operator", "/metrics",
                             # The proof of GPU's steps (not the long-poll, which waits on purpose).
                             "/api/v1/proof/start", "/api/v1/proof/commit", "/api/v1/proof/open"})
# The shutdown's shares (issue 15, item 3: SIGTERM exits within 10 s, having
# spooled what it holds, even with the database frozen). They add up to
# SHUTDOWN_BUDGET_S; the rest of the 10 s is the interpreter's exit on a
# loaded machine.
# The writer stops waiting on the database this long after the shutdown
# begins: a write still running is abandoned and spooled, later ones spooled.
WRITER_GIVE_UP_S = 3.0
# Seconds aiohttp gives in-flight requests at shutdown before closing them:
# past WRITER_GIVE_UP_S, so a push waiting for its write is answered.
SHUTDOWN_TIMEOUT_S = 3.5
# Each component's stop (scraper, maintenance, alerts with its deliverer, proof rounds).
COMPONENT_STOP_S = 0.5
# The writer's close after it gave up (the spool only, then its connections) and the pool's close.
WRITER_CLOSE_S = 0.75
POOL_CLOSE_S = 0.5
# Tasks left over when ``collector.process.run`` returns get this long to end; threads are not waited for.
EXIT_GRACE_S = 0.25
SHUTDOWN_BUDGET_S = SHUTDOWN_TIMEOUT_S + 4 * COMPONENT_STOP_S + WRITER_CLOSE_S + POOL_CLOSE_S + 2 * EXIT_GRACE_S

SETTINGS = web.AppKey("settings", CollectorSettings)
METRICS = web.AppKey("metrics", SelfMetrics)
POOL = web.AppKey("pool", AsyncConnectionPool)
APPENDABLE = web.AppKey("appendable", object)  # an Appendable (a Protocol, so not checkable)
AUTH = web.AppKey("auth", Authenticator)
PUSH = web.AppKey("push", PushReceiver)
REMOTE_WRITE = web.AppKey("remote_write", RemoteWriteReceiver)
REGISTRATION = web.AppKey("registration", Registration)
JOBS = web.AppKey("jobs", JobLedger)
CHANNELS = web.AppKey("channels", AlertChannels)
SNAPSHOT_GAUGES = web.AppKey("snapshot_gauges", FleetSnapshotGauges)
PROOFS = web.AppKey("proofs", Proofs)


def make_app(settings: CollectorSettings, *, appendable: Appendable | None = None,
             components: Sequence[Component] = ()) -> web.Application:
    """The collector app. ``appendable``: storage (default: the writer). ``components``: see the module doc."""
    app = web.Application(middlewares=[_errors_and_latency], client_max_size=settings.max_body_bytes,
                          handler_args={"auto_decompress": False, "keepalive_timeout": HEADER_TIMEOUT_S})
    app[SETTINGS] = settings
    app[METRICS] = SelfMetrics(collector_id=settings.collector_id, shard=settings.shard_text)
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_given_storage_ctx(appendable) if appendable is not None else _writer_ctx)
    app.cleanup_ctx.append(_handlers_ctx)
    for component in components:
        app.cleanup_ctx.append(_component_ctx(component))

    app.router.add_post("/api/v1/nodes", _delegate(REGISTRATION, "post"))
    app.router.add_patch("/api/v1/nodes/{node_id}", _delegate(REGISTRATION, "patch"))
    app.router.add_post("/api/v1/push", _delegate(PUSH, "post"))
    app.router.add_post("/api/v1/write", _delegate(REMOTE_WRITE, "post"))
    app.router.add_post("/api/v1/jobs", _delegate(JOBS, "post"))
    app.router.add_post("/api/v1/channels", _delegate(CHANNELS, "post"))
    app.router.add_get("/api/v1/channels", _delegate(CHANNELS, "get"))
    app.router.add_delete("/api/v1/channels/{channel_id}", _delegate(CHANNELS, "delete"))
    # Not under the database deadline: the send has the alert timeout of its own.
    app.router.add_post("/api/v1/channels/{channel_id}/test", _delegate(CHANNELS, "test"))
    app.router.add_get("/api/v1/operator", _operator_view)
    # Proof of GPU (issue 14, docs/proof.md): long-polls are answered at shutdown, not waited out.
    app.router.add_get("/api/v1/proof/challenge", _delegate(PROOFS, "challenge"))
    app.router.add_post("/api/v1/proof/start", _delegate(PROOFS, "start"))
    app.router.add_post("/api/v1/proof/commit", _delegate(PROOFS, "commit"))
    app.router.add_post("/api/v1/proof/open", _delegate(PROOFS, "open"))
    app.on_shutdown.append(_close_proofs)
    app.on_shutdown.append(_writer_gives_up)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


# -- lifecycle -------------------------------------------------------------------

async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = AsyncConnectionPool(
        settings.dsn, min_size=1, max_size=settings.db_pool_size, open=False, name="collector",
        kwargs={"autocommit": True, "connect_timeout": max(1, round(settings.db_timeout_s))},
        timeout=settings.db_timeout_s,
        # One empty round trip per checkout: after a database restart the
        # first request gets a fresh connection instead of an error.
        check=AsyncConnectionPool.check_connection,
    )
    # wait=False: a collector started while the database is down still
    # serves /healthz (503) and comes right once the database is back.
    await pool.open(wait=False)
    app[POOL] = pool
    try:
        yield
    finally:
        # Not waited for past its share: connections held by abandoned work on a frozen server.
        await _within(pool.close(timeout=POOL_CLOSE_S), POOL_CLOSE_S, "the database pool")


def _given_storage_ctx(appendable: Appendable) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[APPENDABLE] = appendable
        yield

    return ctx


async def _writer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The production writer (collector/writer.py), on the same metrics registry."""
    from collector.writer import Writer

    settings = app[SETTINGS]
    mode = await asyncio.to_thread(database_mode, settings.dsn)
    writer = Writer(settings.dsn, spool_dir=settings.spool_dir, collector_id=settings.collector_id,
                    mode=mode, registry=app[METRICS].registry)
    await writer.__aenter__()
    app[APPENDABLE] = writer
    try:
        yield
    finally:
        writer.give_up_database(WRITER_GIVE_UP_S)  # (if the shutdown did not already: ``run`` was not used)
        # After giving up, closing is the spool only; the share bounds a full disk or a bug, too.
        await _within(writer.close(), max(WRITER_CLOSE_S, writer.seconds_until_given_up() + WRITER_CLOSE_S),
                      "the writer")


async def _handlers_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, metrics, pool = app[SETTINGS], app[METRICS], app[POOL]
    auth = Authenticator(pool, admin_token=settings.admin_token, cache_s=settings.token_cache_s,
                         deadline_s=settings.db_timeout_s)
    app[AUTH] = auth
    app[PUSH] = PushReceiver(auth=auth, appendable=app[APPENDABLE], metrics=metrics, settings=settings)
    app[REMOTE_WRITE] = RemoteWriteReceiver(auth=auth, pool=pool, appendable=app[APPENDABLE], metrics=metrics,
                                            settings=settings)
    addresses = AddressPolicy(allow_private=settings.allow_private_targets)  # issue 15: no SSRF
    app[REGISTRATION] = Registration(pool=pool, auth=auth, max_json_bytes=settings.max_json_bytes,
                                     addresses=addresses)
    app[JOBS] = JobLedger(pool=pool, auth=auth, max_json_bytes=settings.max_json_bytes)
    from collector.delivery import Sender, SmtpSettings

    # The "test this channel" sender (issue 16): the deliverer's formats and SSRF guard.
    sender = Sender(timeout_s=settings.alert_timeout_s, smtp=SmtpSettings.from_settings(settings),
                    addresses=addresses)
    app[CHANNELS] = AlertChannels(pool=pool, auth=auth, max_json_bytes=settings.max_json_bytes,
                                  addresses=addresses, sender=sender)
    app[PROOFS] = Proofs(pool=pool, auth=auth, settings=settings, registry=metrics.registry)
    gauges = FleetSnapshotGauges(settings.dsn, on_error=metrics.snapshot_errors.inc)
    metrics.registry.register(gauges)
    app[SNAPSHOT_GAUGES] = gauges
    await sender.__aenter__()
    try:
        yield
    finally:
        metrics.registry.unregister(gauges)
        await sender.__aexit__(None, None, None)


def _component_ctx(component: Component) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        manager = component(app)
        await manager.__aenter__()
        try:
            yield
        finally:
            # Its share of the shutdown: a loop stuck on a frozen database is abandoned.
            await _within(manager.__aexit__(None, None, None), COMPONENT_STOP_S,
                          getattr(component, "__name__", "a component"))

    return ctx


_ABANDONED: set[asyncio.Task] = set()  # work cut off at shutdown, kept referenced until it ends


async def _within(work: Awaitable[object], seconds: float, what: str) -> None:
    """Await ``work`` for at most ``seconds``; past that it is cancelled and left to end on its own.

    Not ``asyncio.wait_for``: that waits for the cancelled work to end, and a
    cancelled psycopg query waits up to 10 s more for a frozen server
    (as ``requests.within_deadline``).
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        task.result()
        return
    log.warning("shutdown: %s did not stop within %g s; abandoned", what, seconds)
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(lambda t: (_ABANDONED.discard(t), t.cancelled() or t.exception()))


def scraper_component(app: web.Application) -> AbstractAsyncContextManager[object]:
    """The scraper (collector/scrape.py): this replica's shard, on the app's storage, pool and registry."""
    from collector.scrape import Scraper

    settings = app[SETTINGS]
    return Scraper(settings.dsn, app[APPENDABLE], pool=app[POOL], shard=settings.shard,
                   collector_id=settings.collector_id, registry=app[METRICS].registry,
                   concurrency=settings.scrape_concurrency, timeout_s=settings.scrape_timeout_s,
                   max_body_bytes=settings.max_body_bytes, max_series=settings.max_series_per_node,
                   max_label_len=settings.max_label_len,
                   addresses=AddressPolicy(allow_private=settings.allow_private_targets))


def maintenance_component(app: web.Application) -> AbstractAsyncContextManager[object]:
    """The maintenance loop (collector/maintenance.py): rollups and housekeeping."""
    from collector.maintenance import Maintenance

    settings = app[SETTINGS]
    return Maintenance(settings.dsn, integrity_interval_s=settings.integrity_interval_s,
                       publish_interval_s=settings.publish_interval_s, bundle_dir=settings.bundle_dir)


@contextlib.asynccontextmanager
async def alerts_component(app: web.Application) -> AsyncIterator[object]:
    """Offline alerts (issue 7): the evaluation loop (collector/alerts.py) and the deliverer (collector/delivery.py)."""
    from collector.alerts import AlertLoop
    from collector.delivery import Deliverer

    settings, registry = app[SETTINGS], app[METRICS].registry
    async with Deliverer.from_settings(app[POOL], settings, registry=registry) as deliverer:
        async with AlertLoop(app[POOL], eval_s=settings.alert_eval_s, flap_window_s=settings.alert_flap_window_s,
                             registry=registry, on_queued=deliverer.wake) as loop:
            yield loop


def proof_component(app: web.Application) -> AbstractAsyncContextManager[object]:
    """Proof-of-GPU rounds at random gaps and their verdict timers (collector/proof_rounds.py)."""
    from collector.proof_rounds import RoundLoop

    return RoundLoop(app[PROOFS], interval_s=app[SETTINGS].proof_interval_s)


async def _close_proofs(app: web.Application) -> None:
    if PROOFS in app:
        app[PROOFS].close()


async def _writer_gives_up(app: web.Application) -> None:
    """The shutdown has begun: the writer waits on the database WRITER_GIVE_UP_S more, then spools."""
    give_up = getattr(app.get(APPENDABLE), "give_up_database", None)
    if give_up is not None:
        give_up(WRITER_GIVE_UP_S)


def default_components(settings: CollectorSettings) -> list[Component]:
    """What ``run`` starts beside the HTTP side: the scraper (unless --no-scrape), maintenance, alerts
    (unless --no-alerts) and proof rounds (unless --no-proof)."""
    components: list[Component] = []
    if settings.scrape_enabled:
        components.append(scraper_component)
    components.append(maintenance_component)
    if settings.alerts_enabled:
        components.append(alerts_component)
    if settings.proof_enabled:
        components.append(proof_component)
    return components


def database_mode(dsn: str) -> str:
    """The database's mode, or FleetscopeError if it is unreachable or has no schema."""
    from fleetscope.db import connect, describe_dsn
    from fleetscope.migrate import database_mode as recorded_mode

    with connect(dsn, autocommit=True) as conn:
        mode = recorded_mode(conn)
    if mode is None:
        raise FleetscopeError(f"the database at {describe_dsn(dsn)} has no fleetscope schema; "
                              "run 'fleetscope db init'")
    return mode


# -- handlers ---------------------------------------------------------------------

def _delegate(key: web.AppKey, method: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A route handler calling ``method`` of the object at ``key`` (built at start-up)."""
    async def handler(request: web.Request) -> web.StreamResponse:
        return await getattr(request.app[key], method)(request)

    handler.__name__ = method
    return handler


async def _operator_view(request: web.Request) -> web.Response:
    """The caller's own nodes, states, uptime and alert history (fleetscope/operators.py)."""
    from fleetscope.operators import operator_view_from_dsn

    operator_id = await request.app[AUTH].operator(request)
    view = await asyncio.to_thread(operator_view_from_dsn, request.app[SETTINGS].dsn, operator_id)
    if view is None:  # deleted since its token was cached
        raise Rejected(404, requests.R_NOT_FOUND, "no such operator")
    return web.json_response(view)


async def _metrics(request: web.Request) -> web.Response:
    await request.app[SNAPSHOT_GAUGES].refresh()
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def _healthz(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    facts = {"collector_id": settings.collector_id, "shard": settings.shard_text}
    wait = min(HEALTH_TIMEOUT_S, settings.db_timeout_s)
    async def probe() -> None:
        async with request.app[POOL].connection(timeout=wait) as conn:
            await conn.execute("SELECT 1")

    try:
        await requests.within_deadline(probe(), wait)  # not asyncio.timeout: see within_deadline
    except (psycopg.Error, OSError, TimeoutError, Rejected) as exc:
        reason = _one_line(exc) or type(exc).__name__
        return web.json_response({"ok": False, "error": f"database unavailable: {reason}", **facts}, status=503)
    return web.json_response({"ok": True, "database": "ok", **facts})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _error_response(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message, "reason": reason}),
                        content_type="application/json", headers=headers)


@web.middleware
async def _errors_and_latency(request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every refusal as JSON with its reason counted; latency observed per route."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = "cancelled"
    try:
        resource = request.match_info.route.resource
        if resource is not None and resource.canonical in DEADLINE_ROUTES:
            response = await requests.within_deadline(handler(request), request.app[SETTINGS].db_timeout_s)
        else:
            response = await handler(request)
        status = str(response.status)
        return response
    except Rejected as rejected:
        status = str(rejected.status)
        metrics.reject(rejected.reason)
        return _error_response(rejected.status, rejected.reason, rejected.message, rejected.headers)
    except web.HTTPException as exc:  # the router's 404 and 405
        status = str(exc.status)
        if exc.status < 400:
            raise
        reason = {404: requests.R_NOT_FOUND, 405: requests.R_METHOD_NOT_ALLOWED}.get(exc.status, f"http_{exc.status}")
        metrics.reject(reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return _error_response(exc.status, reason, exc.reason, headers)
    except psycopg.OperationalError as exc:  # includes PoolTimeout: the database, not the request
        status = "503"
        log.warning("%s %s: database unavailable: %s", request.method, request.path, _one_line(exc))
        metrics.reject(requests.R_DATABASE_UNAVAILABLE)
        return _error_response(503, requests.R_DATABASE_UNAVAILABLE, "the database is unavailable; retry later",
                               {"Retry-After": str(DATABASE_RETRY_AFTER_S)})
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        # A value our checks let through but the schema refused: still the
        # client's input, so a 400, and logged so that the check gets fixed.
        status = "400"
        log.error("%s %s: the database refused a value the checks passed: %s",
                  request.method, request.path, _one_line(exc))
        metrics.reject(requests.R_INVALID_FIELD)
        return _error_response(400, requests.R_INVALID_FIELD, f"a value was refused: {_one_line(exc)[:200]}")
    except Exception:
        status = "500"
        log.exception("%s %s failed", request.method, request.path)
        return _error_response(500, "internal_error", "internal error")
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.requests.labels(route, status).observe(time.perf_counter() - started)
