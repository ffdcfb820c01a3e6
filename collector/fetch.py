"""A small HTTP/1.1 GET client for scrapes: one kept-alive connection per target.

aiohttp's client spent about half of the scraper's CPU per scrape here (its
request machinery: URL and header objects, tracing hooks, cookie handling,
the stream reader; py-spy at 400 scrapes/s, docs/benchmarks-scrape.md).
A scrape needs much less: the same GET on the same connection every
interval. So, as Prometheus keeps one connection per target, a target here
keeps one ``Connection``: the request bytes are built once, and the response
is read by an ``asyncio.Protocol`` that splits the head with one ``find`` and
the body by Content-Length or chunks. Bodies in gzip are inflated with a bound
(a bomb stops at ``max_bytes``; the compressed body is bounded by the same
limit).

Only plain ``http://`` URLs without credentials take this path
(:func:`supported`); the scraper sends anything else, and any redirect, through
aiohttp. Errors are the same exceptions aiohttp's path meets
(``ConnectionRefusedError`` and other ``OSError``s on connect, ``TimeoutError``)
plus :class:`Disconnected` and :class:`BadResponse`.
"""

from __future__ import annotations

import asyncio
import zlib
from urllib.parse import urlsplit

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
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] | None = None
        self.length: int | None = None   # Content-Length, when given
        self.chunked = False
        self.chunks: list[bytes] = []
        self.chunked_size = 0
        self.keep_alive = True

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


class Connection:
    """One target's kept-alive connection; ``get`` one response at a time."""

    __slots__ = ("request", "_transport", "_protocol")

    def __init__(self, request: Request) -> None:
        self.request = request
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = self._protocol = None

    async def get(self, *, max_bytes: int) -> Response:
        """Send the GET and return the response, its body inflated if gzip'd.

        Raises OSError (connect), Disconnected, BadResponse or TooLarge; the
        caller bounds the time (asyncio.timeout) and, on any error, the
        connection is closed so the next get starts afresh.
        """
        try:
            reused = self._protocol is not None and not self._protocol.closed
            try:
                response = await self._roundtrip(max_bytes, reused)
            except Disconnected:
                if not reused:
                    raise
                # The server dropped the idle connection just as we reused it
                # (its keep-alive timeout): once more on a new one, as aiohttp does.
                self.close()
                response = await self._roundtrip(max_bytes, False)
        except BaseException:
            self.close()
            raise
        if self._protocol is not None and self._protocol.closed:
            self.close()
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            response.body = _inflate(response.body, encoding, max_bytes)
        elif encoding not in ("", "identity"):
            raise BadResponse(f"unsupported Content-Encoding {encoding!r}")
        if len(response.body) > max_bytes:
            raise TooLarge
        return response

    async def _roundtrip(self, max_bytes: int, reused: bool) -> Response:
        loop = asyncio.get_running_loop()
        if not reused:
            self.close()
            transport, protocol = await loop.create_connection(_Protocol, self.request.host, self.request.port)
            self._transport, self._protocol = transport, protocol  # type: ignore[assignment]
        protocol = self._protocol
        assert protocol is not None and self._transport is not None
        protocol._reset()
        protocol.max_bytes = max_bytes
        protocol.waiter = waiter = loop.create_future()
        if protocol.buf:
            protocol.buf.clear()  # bytes nobody asked for: a misbehaving server
        self._transport.write(self.request.data)
        try:
            return await waiter
        finally:
            protocol.waiter = None


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
