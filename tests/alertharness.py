"""Helpers for the alert tests: local receivers (HTTP and SMTP) and a collector running its alert loop.

Receivers are real servers on 127.0.0.1: an aiohttp app that records every
request (and answers with a status the test chooses), an SMTP server
(aiosmtpd) that records every message, and a TCP listener that accepts and
never answers (the worst kind of unreachable webhook).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from typing import Any

import psycopg
from aiohttp import web

from fleetscope.uptime import slot_of


@dataclass
class Received:
    path: str
    body: Any
    at: float  # time.monotonic()


@dataclass
class Receiver:
    """Records POSTs; answers each with the next status in ``statuses`` (then 200)."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append(Received(request.path, json.loads(raw), time.monotonic()))
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status < 400 else "no")

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.body for r in self.received if path is None or r.path == path]

    async def wait_for(self, count: int, *, timeout: float, path: str | None = None) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.bodies(path)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.bodies(path)


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 keeping every message it is given."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[str, list[str], Any]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                      message_from_bytes(envelope.original_content)))
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


class Silent:
    """A TCP listener that accepts connections and never answers: a hung webhook."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"

    def close(self) -> None:
        self._sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_url() -> str:
    """A URL on a port nobody listens on: connection refused."""
    return f"http://127.0.0.1:{free_port()}/hook"


def now() -> datetime:
    return datetime.now(timezone.utc)


def observe(conn: psycopg.Connection, node_id: int, when: datetime | None = None, *, ok: bool = True) -> None:
    """An observation as the writer stores it (receive time, slot on the node's interval)."""
    when = when or now()
    interval = conn.execute("SELECT interval_s FROM nodes WHERE node_id = %s", (node_id,)).fetchone()[0]
    conn.execute("INSERT INTO observations (time, node_id, ok, source, slot, latency_ms)"
                 " VALUES (%s, %s, %s, 'push', %s, 2.0)", (when, node_id, ok, slot_of(when, interval)))


def add_channel(conn: psycopg.Connection, operator_id: int, kind: str, target: str) -> int:
    return conn.execute("INSERT INTO alert_channels (operator_id, kind, target) VALUES (%s, %s, %s)"
                        " RETURNING channel_id", (operator_id, kind, target)).fetchone()[0]


def deliveries(conn: psycopg.Connection) -> list[dict[str, Any]]:
    cur = conn.execute("SELECT channel_id, node_id, event, attempt, ok, error, kind, outbox_id"
                       " FROM alert_deliveries ORDER BY delivery_id")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


async def run_rounds(evaluator, dsn: str, start: datetime, end: datetime, *,
                     step: timedelta = timedelta(seconds=5)) -> list[tuple[int, str]]:
    """The messages of ``evaluator``'s alert rounds from ``start`` to ``end`` (inclusive), one every ``step``."""
    sent = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
        t = start
        while t <= end:
            sent += (await evaluator.run_round(aconn, now=t)).messages
            t += step
    return sent
