"""The collector as a process: listen, stop on SIGINT or SIGTERM, and exit within the shutdown budget.

``run`` serves the app that ``collector.app.make_app`` builds until a signal
(or ``stop``); ``serve`` is ``asyncio.run(run(...))`` without waiting for
work abandoned on a frozen database (collector/app.py's module doc has the
budget, SHUTDOWN_BUDGET_S); ``main`` is ``fleetscope collector`` without the
fleetscope CLI (``python -m collector.process``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from aiohttp import web

from collector.app import EXIT_GRACE_S, SHUTDOWN_TIMEOUT_S, database_mode, default_components, make_app
from collector.server import CollectorRunner
from collector.settings import CollectorSettings, add_arguments, from_args
from fleetscope.errors import FleetscopeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from collector.app import Component
    from collector.ingest import Appendable

log = logging.getLogger("fleetscope.collector")  # (the name collector/app.py logs under)


async def run(settings: CollectorSettings, *, components: Sequence[Component] | None = None,
              appendable: Appendable | None = None, stop: asyncio.Event | None = None,
              handle_signals: bool = True) -> None:
    """Serve the collector until SIGINT or SIGTERM (or ``stop`` is set), then close everything.

    ``handle_signals=False`` leaves the signals to the caller (the demo stops
    its marketplace before the collector).
    """
    await asyncio.to_thread(database_mode, settings.dsn)  # fail fast, with the reason, before listening
    app = make_app(settings, appendable=appendable,
                   components=default_components(settings) if components is None else components)
    # No access log: at tens of thousands of pushing nodes it would be most of
    # the collector's output; /metrics counts requests instead.
    runner = CollectorRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    try:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or Windows
                loop.add_signal_handler(sig, stop.set)
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            raise FleetscopeError(f"cannot listen on {settings.host}:{settings.port} "
                                  f"(--host/--port): {exc.strerror or exc}") from None
        log.info("collector %s (shard %s) listening on http://%s:%d", settings.collector_id,
                 settings.shard_text, settings.host, settings.port)
        await stop.wait()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await runner.cleanup()


def serve(settings: CollectorSettings) -> None:
    """``run`` until SIGINT or SIGTERM, as ``asyncio.run`` would, but without waiting for abandoned work.

    ``asyncio.run`` waits for every task left over and every worker thread;
    with the database frozen some never end (a cancelled psycopg query waits
    for the server, a thread blocks in its connect), and the interpreter
    joins the worker threads at exit too. So leftover tasks get EXIT_GRACE_S,
    and if threads are still blocked then (what was accepted is spooled by
    now), the process leaves without them.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run(settings))
    finally:
        try:
            leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.wait(leftover, timeout=EXIT_GRACE_S))
        finally:
            loop.close()  # (its default executor is shut down without waiting)
    _leave_if_threads_blocked()


def _leave_if_threads_blocked() -> None:
    deadline = time.monotonic() + EXIT_GRACE_S
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    blocked = [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()
               and not t.daemon]
    if blocked:
        log.warning("exiting without %d worker thread(s) blocked on the database", len(blocked))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # the interpreter would join them at exit: forever, on a frozen server


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m collector.process``, the same as ``fleetscope collector``."""
    parser = argparse.ArgumentParser(prog="fleetscope collector", description="Run the fleetscope collector.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(from_args(args))
    except FleetscopeError as err:
        print(f"fleetscope collector: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
