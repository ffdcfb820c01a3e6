"""Alert delivery: sending the outbox's messages, with retries, apart from evaluation.

collector/alerts.py queues one outbox row per message per channel; this loop
claims due rows and sends each in its own task with a time limit, so an
unreachable webhook costs at most one timeout of one task and never holds up
other deliveries, the next evaluation round or the HTTP side. Every attempt
is a row in ``alert_deliveries`` (ok or not, with the error).

- Claims are leases (``claimed_until``), taken with FOR UPDATE SKIP LOCKED, so
  collector replicas share the outbox without sending a message twice; a
  replica that dies mid-send leaves a lease that expires and is retried.
- Messages to one channel about one node go out in order: a pending earlier
  one holds back the later ones (a node_up never overtakes its node_down).
- A failed attempt is retried after ``retry_base_s * 2**(attempt - 1)``
  (capped at MAX_BACKOFF) until ``max_attempts``; an HTTP 4xx other than 408
  and 429 is final at once (a revoked Slack hook stays revoked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import aiohttp
import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg.types.json import Jsonb

from collector import messages
from collector.addresses import AddressPolicy, GuardedConnector

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg_pool import AsyncConnectionPool

    from collector.settings import CollectorSettings

log = logging.getLogger("fleetscope.delivery")

# Sends in flight at once: bounds sockets and threads (SMTP runs in threads),
# far above what an outage of a whole site needs (one message per channel).
CONCURRENCY = 64
# A retry never waits longer than this, whatever the attempt.
MAX_BACKOFF = timedelta(minutes=15)
# Backoff is spread by up to this fraction so that retries to one receiver
# after its outage do not all arrive in the same second.
JITTER = 0.1
# A lease outlives the attempt's time limit by this much before another
# replica may take the message over.
LEASE_MARGIN = timedelta(seconds=30)
# How often the loop looks for due retries when nothing wakes it.
POLL_S = 1.0
# Error texts (connection errors, SMTP answers) are kept up to this length.
ERROR_TEXT_LEN = 300
# Statuses worth retrying: timeouts, rate limits and server errors.
RETRYABLE_4XX = (408, 429)
USER_AGENT = "fleetscope-alerts/1"

CLAIM_SQL = """
UPDATE alert_outbox o
   SET claimed_until = %(lease)s, attempts = o.attempts + 1
  FROM alert_channels c
 WHERE c.channel_id = o.channel_id
   AND o.outbox_id IN (
        SELECT x.outbox_id FROM alert_outbox x
         WHERE x.done_at IS NULL AND x.next_attempt_at <= %(now)s
           AND (x.claimed_until IS NULL OR x.claimed_until <= %(now)s)
           AND NOT EXISTS (SELECT 1 FROM alert_outbox e
                            WHERE e.channel_id = x.channel_id AND e.node_id = x.node_id
                              AND e.done_at IS NULL AND e.outbox_id < x.outbox_id)
         ORDER BY x.next_attempt_at, x.outbox_id
         LIMIT %(limit)s
           FOR UPDATE OF x SKIP LOCKED)
RETURNING o.outbox_id, o.channel_id, o.node_id, o.event, o.payload, o.attempts, c.kind, c.target
"""
RECORD_SQL = """
INSERT INTO alert_deliveries (channel_id, node_id, event, payload, attempt, attempted_at, ok, error, outbox_id, kind)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
DONE_SQL = "UPDATE alert_outbox SET done_at = %s, delivered = %s, claimed_until = NULL WHERE outbox_id = %s"
RETRY_SQL = "UPDATE alert_outbox SET next_attempt_at = %s, claimed_until = NULL WHERE outbox_id = %s"


@dataclass(frozen=True)
class Message:
    outbox_id: int
    channel_id: int
    node_id: int
    event: str
    payload: dict[str, Any]
    attempt: int
    kind: str
    target: str


class DeliveryError(Exception):
    """An attempt failed; ``final`` when retrying cannot help."""

    def __init__(self, text: str, *, final: bool = False) -> None:
        super().__init__(text)
        self.final = final


def backoff(attempt: int, *, base_s: float, rng: Callable[[], float] = random.random) -> timedelta:
    """The wait after failed attempt ``attempt`` (1-based): base x 2^(attempt-1), capped, with jitter."""
    wait = min(base_s * 2 ** (attempt - 1), MAX_BACKOFF.total_seconds())
    return timedelta(seconds=wait * (1 + JITTER * (2 * rng() - 1)))


@dataclass(frozen=True)
class SmtpSettings:
    host: str | None
    port: int
    security: str
    sender: str | None
    user: str | None
    password: str | None

    @classmethod
    def from_settings(cls, settings: CollectorSettings) -> SmtpSettings:
        return cls(host=settings.smtp_host, port=settings.smtp_port, security=settings.smtp_security,
                   sender=settings.smtp_from, user=settings.smtp_user, password=settings.smtp_password)


class Deliverer:
    """Sends due outbox messages until closed. ``async with Deliverer(pool, settings=...)``."""

    def __init__(self, pool: AsyncConnectionPool, *, timeout_s: float, max_attempts: int, retry_base_s: float,
                 smtp: SmtpSettings, registry: CollectorRegistry | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 addresses: AddressPolicy | None = None) -> None:
        self._pool = pool
        # Where webhooks may go (issue 15: no SSRF); by default what
        # FLEETSCOPE_ALLOW_PRIVATE_TARGETS says.
        self._addresses = addresses if addresses is not None else AddressPolicy.from_environ()
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._retry_base_s = retry_base_s
        self._sender = Sender(timeout_s=timeout_s, smtp=smtp, addresses=self._addresses)
        self._clock = clock
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._sending: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        # Its own registry when none is given: never prometheus_client's global one.
        kw = {"registry": registry if registry is not None else CollectorRegistry()}
        self.attempts = Counter("fleetscope_alert_delivery_attempts",
                                "Alert delivery attempts by channel kind and result (ok, retry, failed).",
                                ["kind", "result"], **kw)
        self.in_flight = Gauge("fleetscope_alert_deliveries_in_flight", "Alert messages being sent now.", **kw)

    @classmethod
    def from_settings(cls, pool: AsyncConnectionPool, settings: CollectorSettings, *,
                      registry: CollectorRegistry | None = None) -> Deliverer:
        return cls(pool, timeout_s=settings.alert_timeout_s, max_attempts=settings.alert_max_attempts,
                   retry_base_s=settings.alert_retry_base_s, smtp=SmtpSettings.from_settings(settings),
                   registry=registry, addresses=AddressPolicy(allow_private=settings.allow_private_targets))

    def wake(self) -> None:
        """Look for due messages now (evaluation just queued some)."""
        self._wake.set()

    async def __aenter__(self) -> Deliverer:
        await self._sender.__aenter__()
        self._task = asyncio.create_task(self._loop(), name="fleetscope-alert-delivery")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._task, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a cancelled send's lease expires; it is retried
        await self._sender.__aexit__(*exc)

    async def _loop(self) -> None:
        while True:
            try:
                await self.dispatch()
            except (psycopg.Error, OSError) as err:
                log.warning("alert delivery paused: %s", str(err).strip())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()
            self._wake.clear()

    async def dispatch(self) -> int:
        """Claim due messages and start a send task for each; returns how many were started."""
        free = CONCURRENCY - len(self._sending)
        if free <= 0:
            return 0
        now = self._clock()
        lease = now + timedelta(seconds=self._timeout_s) + LEASE_MARGIN
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(CLAIM_SQL, {"now": now, "lease": lease, "limit": free})).fetchall()
        for row in rows:
            task = asyncio.create_task(self._deliver(Message(*row)), name=f"fleetscope-alert-{row[0]}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return len(rows)

    async def _deliver(self, message: Message) -> None:
        async with self._slots:
            self.in_flight.inc()
            try:
                error = await self._sender.attempt(message.kind, message.target, message.payload)
                await self._record(message, error)
            finally:
                self.in_flight.dec()

    async def _record(self, message: Message, error: DeliveryError | None) -> None:
        now = self._clock()
        final = error is not None and (error.final or message.attempt >= self._max_attempts)
        result = "ok" if error is None else ("failed" if final else "retry")
        self.attempts.labels(message.kind, result).inc()
        if error is not None:
            log.warning("alert %s for node %d to %s channel %d, attempt %d: %s", message.event, message.node_id,
                        message.kind, message.channel_id, message.attempt, error)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(RECORD_SQL, (
                    message.channel_id, message.node_id, message.event, Jsonb(message.payload),
                    message.attempt, now, error is None, None if error is None else str(error), message.outbox_id,
                    message.kind))
                if error is None or final:
                    await conn.execute(DONE_SQL, (now, error is None, message.outbox_id))
                else:
                    wait = backoff(message.attempt, base_s=self._retry_base_s)
                    await conn.execute(RETRY_SQL, (now + wait, message.outbox_id))
        except (psycopg.Error, OSError) as err:
            # The lease expires and the message is sent again: at least once.
            log.warning("could not record alert delivery %d: %s", message.outbox_id, str(err).strip())


class Sender:
    """Sends one message to one channel, within a time limit; ``async with Sender(...)``.

    The deliverer's sends and an operator's "test this channel" (collector/channels.py)
    both go through here: the same formats, the same SSRF guard on every
    connection (GuardedConnector, issue 15) and the same error texts.
    """

    def __init__(self, *, timeout_s: float, smtp: SmtpSettings, addresses: AddressPolicy) -> None:
        self._timeout_s = timeout_s
        self._smtp = smtp
        self._addresses = addresses
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        self._session = aiohttp.ClientSession(
            connector=GuardedConnector(self._addresses),
            timeout=aiohttp.ClientTimeout(total=self._timeout_s), headers={"User-Agent": USER_AGENT})
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def attempt(self, kind: str, target: str, payload: dict[str, Any]) -> DeliveryError | None:
        """Send once; None when delivered, else the error (never raises for a failed delivery)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._send(kind, target, payload)
        except DeliveryError as exc:
            return exc
        except TimeoutError:
            return DeliveryError(f"no answer within {self._timeout_s:g} s")
        except (aiohttp.ClientError, OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            return DeliveryError(f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LEN])
        except Exception as exc:  # a bug of ours: recorded and final, never a silent retry loop
            log.exception("alert delivery to a %s channel failed", kind)
            return DeliveryError(f"internal error: {type(exc).__name__}: {exc}"[:ERROR_TEXT_LEN], final=True)
        return None

    # -- channel kinds -------------------------------------------------------------

    async def _send(self, kind: str, target: str, payload: dict[str, Any]) -> None:
        if kind == "email":
            await self._send_email(target, payload)
            return
        body = {"webhook": messages.webhook_body, "slack": messages.slack_body,
                "discord": messages.discord_body}[kind](payload)
        assert self._session is not None
        async with self._session.post(target, data=json.dumps(body),
                                      headers={"Content-Type": "application/json"},
                                      allow_redirects=False) as response:
            if 200 <= response.status < 300:
                return
            # The status and its reason only, never the body: the record is
            # shown to the operator, and the target may be a service inside
            # our network that an operator should not be able to read.
            final = 400 <= response.status < 500 and response.status not in RETRYABLE_4XX
            raise DeliveryError(f"HTTP {response.status} {response.reason or ''}".strip(), final=final)

    async def _send_email(self, target: str, payload: dict[str, Any]) -> None:
        smtp = self._smtp
        if not smtp.host or not smtp.sender:
            raise DeliveryError("email alerts are not configured on this collector (FLEETSCOPE_SMTP_HOST, "
                                "FLEETSCOPE_SMTP_FROM)", final=True)
        email = messages.email_message(payload, sender=smtp.sender, to=target)
        # smtplib blocks: a thread, bounded by the socket timeout and by the
        # caller's asyncio.timeout (which stops waiting for it).
        await asyncio.to_thread(_smtp_send, smtp, email, self._timeout_s)


def _smtp_send(smtp: SmtpSettings, email: Any, timeout_s: float) -> None:
    context = ssl.create_default_context()
    if smtp.security == "tls":
        client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout_s, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout_s)
    with client:
        if smtp.security == "starttls":
            client.starttls(context=context)
        if smtp.user:
            client.login(smtp.user, smtp.password or "")
        try:
            client.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipient refused: {exc.recipients}"[:ERROR_TEXT_LEN], final=True) from None
