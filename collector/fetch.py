"""A small HTTP/1.1 GET client for scrapes, with kept-alive connections.

aiohttp's client cost about 0.17 CPU-s per 1,000 fetches of the simulator's
8-GPU payload here, this one 0.075 (docs/benchmarks-scrape.md): aiohttp
builds URL, header, tracing, cookie and stream objects per request, where a
scrape sends the same GET every interval. So a target keeps its ``Request``
(the bytes, built once) and takes a kept-alive connection from a ``Pool`` by
host and port; the response is read by an ``asyncio.Protocol`` that splits the
head with one ``find`` and the body by Content-Length, chunks or the close.
Bodies in gzip are inflated with a bound (a bomb stops at ``max_bytes``; the
compressed body is bounded by the same limit).

Only plain ``http://`` URLs without credentials take this path
(:func:`supported`); the scraper sends anything else, and any redirect, through
aiohttp. Errors are the exceptions aiohttp's path meets on connect
(``ConnectionRefusedError`` and other ``OSError``s), plus :class:`Disconnected`,
:class:`BadResponse` and :class:`TooLarge`; the caller bounds the time.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collector.addresses import AddressPolicy

# Response heads larger than this are refused (aiohttp's default line limit is 8 KiB).
MAX_HEAD_BYTES = 64 * 1024
REDIRECTS = frozenset((301, 302, 303, 307, 308))


class Disconnected(Exception):
    """The server closed the connection before the response was complete."""


class BadResponse(Exception):
    """The response is not HTTP/1.x as this client reads it."""


class TooLarge(Exception):
    """The body (inflated) exceeds the limit."""


def supported(url: str) -> bool:
    """Whether ``url`` can be fetched here (plain http, no userinfo, a host)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme == "http" and bool(parts.hostname) and "@" not in parts.netloc


class Request:
    """A target's GET, built once: host, port and the request bytes."""

    __slots__ = ("host", "port", "data")

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname
        self.port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.data = "\r\n".join(lines).encode("latin-1")


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # names in lower case
        self.body = body


class _Protocol(asyncio.Protocol):
    """Reads one response at a time from a kept-alive connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.max_bytes = 0
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] | None = None
        self.length: int | None = None   # Content-Length, when given
        self.chunked = False
        self.chunks: list[bytes] = []
        self.chunked_size = 0
        self.keep_alive = True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def roundtrip(self, data: bytes, max_bytes: int) -> Response:
        """Write one request and wait for its whole response."""
        assert self.transport is not None and self.waiter is None
        self._reset()
        self.max_bytes = max_bytes
        self.buf.clear()  # bytes nobody asked for: a misbehaving server
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await waiter
        finally:
            self.waiter = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.headers is not None and self.length is None and not self.chunked:
                self._finish(bytes(self.buf))  # a body delimited by the close
            else:
                waiter.set_exception(Disconnected("server disconnected"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost ends a pending read

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            self._advance()
        except Exception as err:  # noqa: BLE001 - any parse fault fails the read, never the loop
            self.keep_alive = False
            self.waiter.set_exception(err)

    def _advance(self) -> None:
        buf = self.buf
        if self.headers is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise BadResponse("response head too large")
                return
            self._head(bytes(buf[:end]))
            del buf[: end + 4]
        if self.chunked:
            self._chunks()
        elif self.length is not None:
            if self.length > self.max_bytes:
                raise TooLarge
            if len(buf) >= self.length:
                body = bytes(buf[: self.length])
                del buf[: self.length]
                self._finish(body)
        elif len(buf) > self.max_bytes:
            raise TooLarge

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise BadResponse(f"not HTTP/1.x: {lines[0][:80]!r}")
        try:
            self.status = int(rest[:3])
        except ValueError:
            raise BadResponse(f"bad status line: {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadResponse(f"bad header line: {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        connection = headers.get("connection", "").lower()
        self.keep_alive = version == "HTTP/1.1" and "close" not in connection
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.chunked = True
        elif "content-length" in headers:
            try:
                self.length = int(headers["content-length"])
            except ValueError:
                raise BadResponse("bad Content-Length") from None
            if self.length < 0:
                raise BadResponse("bad Content-Length")
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self.length = 0
        else:
            self.keep_alive = False  # the body ends with the connection

    def _chunks(self) -> None:
        buf = self.buf
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise BadResponse("chunk size line too long")
                return
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadResponse("bad chunk size") from None
            if size == 0:
                # The last chunk, then optional trailers, then an empty line:
                # "0\r\n\r\n" or "0\r\nName: value\r\n\r\n".
                trailer_end = buf.find(b"\r\n\r\n", end)
                if trailer_end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise BadResponse("trailers too large")
                    return
                del buf[: trailer_end + 4]
                self._finish(b"".join(self.chunks))
                return
            if len(buf) < end + 2 + size + 2:
                return
            self.chunks.append(bytes(buf[end + 2: end + 2 + size]))
            self.chunked_size += size
            if self.chunked_size > self.max_bytes:
                raise TooLarge
            del buf[: end + 2 + size + 2]

    def _finish(self, body: bytes) -> None:
        waiter = self.waiter
        result = Response(self.status, self.headers or {}, body)
        if not self.keep_alive and self.transport is not None:
            self.closed = True
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(result)


class Pool:
    """Kept-alive connections by (host, port), reused by every target there, as aiohttp's connector does.

    At most ``max_idle`` idle connections are kept in all (each is a file
    descriptor; the open-files limit bounds them): past that, a connection is
    closed after its response and the next scrape of that host connects
    anew. ``get`` is safe to call from many tasks at once.
    """

    def __init__(self, *, max_idle: int, idle_s: float = 30.0, addresses: AddressPolicy | None = None) -> None:
        self.max_idle = max_idle
        self.idle_s = idle_s
        # Which addresses a new connection may go to (issue 15: no SSRF);
        # None: any (the policy's own tests and benchmarks).
        self.addresses = addresses
        self._idle: dict[tuple[str, int], list[_Protocol]] = {}
        self._count = 0

    @property
    def idle(self) -> int:
        return self._count

    def close(self) -> None:
        for protocols in self._idle.values():
            for protocol in protocols:
                protocol.close()
        self._idle.clear()
        self._count = 0

    def sweep(self) -> None:
        """Close connections idle longer than ``idle_s`` (hosts no longer scraped, or scraped rarely)."""
        horizon = time.monotonic() - self.idle_s
        for key in list(self._idle):
            protocols = self._idle[key]
            keep: list[_Protocol] = []
            for p in protocols:
                if not p.closed and p.idle_since > horizon:
                    keep.append(p)
                else:
                    p.close()
            self._count -= len(protocols) - len(keep)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def _take(self, key: tuple[str, int]) -> _Protocol | None:
        idle = self._idle.get(key)
        while idle:
            protocol = idle.pop()
            self._count -= 1
            if not protocol.closed:
                return protocol
        return None

    def _give_back(self, key: tuple[str, int], protocol: _Protocol) -> None:
        if protocol.closed or self._count >= self.max_idle:
            protocol.close()
            return
        protocol.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(protocol)
        self._count += 1

    async def get(self, request: Request, *, max_bytes: int) -> Response:
        """Send ``request``'s GET and return the response, its body inflated if gzip'd.

        Raises OSError (connect), Disconnected, BadResponse or TooLarge; the
        caller bounds the time (asyncio.timeout). A connection that failed,
        or was cancelled mid-response, is closed, never reused.
        """
        key = (request.host, request.port)
        protocol = self._take(key)
        reused = protocol is not None
        try:
            try:
                if protocol is None:
                    protocol = await _connect(request, self.addresses)
                response = await protocol.roundtrip(request.data, max_bytes)
            except Disconnected:
                if not reused:
                    raise
                # The server dropped the idle connection just as we reused it
                # (its keep-alive timeout): once more on a new one, as aiohttp does.
                protocol.close()
                protocol = None
                protocol = await _connect(request, self.addresses)
                response = await protocol.roundtrip(request.data, max_bytes)
        except BaseException:
            if protocol is not None:
                protocol.close()
            raise
        self._give_back(key, protocol)
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            response.body = _inflate(response.body, encoding, max_bytes)
        elif encoding not in ("", "identity"):
            raise BadResponse(f"unsupported Content-Encoding {encoding!r}")
        if len(response.body) > max_bytes:
            raise TooLarge
        return response


async def _connect(request: Request, addresses: AddressPolicy | None) -> _Protocol:
    """A new connection; with a policy, only to an address it allows, checked after resolution."""
    loop = asyncio.get_running_loop()
    if addresses is None:
        _, protocol = await loop.create_connection(_Protocol, request.host, request.port)
        return protocol  # type: ignore[return-value]
    last: OSError | None = None
    for address in await addresses.resolve(request.host, request.port):  # RefusedAddress if none allowed
        try:
            _, protocol = await loop.create_connection(_Protocol, address, request.port)
            return protocol  # type: ignore[return-value]
        except OSError as err:
            last = err
    assert last is not None
    raise last


def _inflate(body: bytes, encoding: str, max_bytes: int) -> bytes:
    # gzip, or for "deflate" a zlib stream (what servers send under that name).
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding != "deflate" else 32 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as err:
        raise BadResponse(f"bad {encoding} body: {err}") from None
    if len(out) > max_bytes:
        raise TooLarge
    if not inflater.eof:
        raise BadResponse(f"truncated {encoding} body")
    return out
