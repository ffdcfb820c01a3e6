"""A real ``fleetscope collector`` process on 127.0.0.1, and a webhook receiver, for end-to-end tests.

The CLI's and the operator page's tests talk to the collector over HTTP as a
user's would: a child process started with the ``fleetscope`` command on a
free port, stopped (SIGTERM) when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import free_port

START_TIMEOUT_S = 60.0
# The receiving side only (no scraping, proofs, alerts, checks or publication),
# a 1 s database deadline, the spool where the test says: the fault tests'
# collector, which they kill, freeze the database under and restart.
INGEST_ONLY_ENV = {"FLEETSCOPE_DB_TIMEOUT_S": "1", "FLEETSCOPE_PUBLISH_INTERVAL_S": "0",
                   "FLEETSCOPE_INTEGRITY_INTERVAL_S": "0", "FLEETSCOPE_PROOF": "0", "FLEETSCOPE_ALERTS": "0",
                   "FLEETSCOPE_SCRAPE": "0"}


def ingest_only_collector(dsn: str, port: int, spool_dir: Path) -> subprocess.Popen:
    """``python -m collector.process`` on ``port``, receiving only (INGEST_ONLY_ENV); the caller stops it."""
    env = {**os.environ, **INGEST_ONLY_ENV, "FLEETSCOPE_SPOOL_DIR": str(spool_dir)}
    return subprocess.Popen([sys.executable, "-m", "collector.process", "--dsn", dsn, "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def collector_process(dsn: str, tmp: Path, *, allow_private: bool = True) -> Iterator[str]:
    """Run ``fleetscope collector`` against ``dsn``; yields its base URL."""
    port = free_port()
    env = {**os.environ, "FLEETSCOPE_DSN": dsn, "FLEETSCOPE_ALLOW_PRIVATE_TARGETS": "1" if allow_private else "0",
           "FLEETSCOPE_INTEGRITY_INTERVAL_S": "0", "FLEETSCOPE_PUBLISH_INTERVAL_S": "0",
           "FLEETSCOPE_ALERT_TIMEOUT_S": "5"}
    log = open(tmp / f"collector-{port}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "fleetscope.cli", "collector", "--host", "127.0.0.1",
                             "--port", str(port), "--spool-dir", str(tmp / f"spool-{port}")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the collector exited with {proc.returncode}: "
                                   f"{(tmp / f'collector-{port}.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers (503 while its database check runs is an answer)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the collector did not come up") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class WebhookSink:
    """A webhook receiver on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.bodies.append(json.loads(raw or b"null"))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
