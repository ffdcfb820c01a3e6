"""What a request may be, and the answer when it is not.

Every refusal is a ``Rejected``: an HTTP status, a short reason code (the
``reason`` label of ``fleetscope_collector_rejects_total``) and a sentence for
the client, answered as JSON ``{"error": ..., "reason": ...}`` by the app's
middleware. Bad input is always a 4xx, never a 5xx.

Bodies are read here, within limits, as they arrive: the compressed size is
counted on the wire (Content-Length is checked first, but a chunked upload
has none), and gzip is inflated incrementally with ``max_length`` so that a
gzip bomb is refused at the first byte past the decompressed limit, having
cost at most that limit plus one step of memory (aiohttp's own inflater is
turned off in collector/app.py for that reason).
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from yarl import URL

from fleetscope import numbers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from aiohttp import web

# One inflate step's output: small enough that overshooting the limit costs
# little, large enough that a 16 MiB body is ~256 calls into zlib.
INFLATE_STEP = 64 * 2**10
# zlib's wbits for "gzip container only" (RFC 1952); zlib/deflate bodies are 415.
GZIP_WBITS = 16 + zlib.MAX_WBITS
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})  # x-gzip: RFC 9110 8.4.1.3 says treat it as gzip
IDENTITY_ENCODINGS = frozenset({"", "identity"})
# A token longer than this is not one of ours (ours are ~47 characters); it is
# refused before any hashing or lookup.
MAX_TOKEN_LEN = 512
# A request body must arrive within this (issue 15: a slow or stalled upload
# holds a connection and its buffers): a 4 MiB push at 1 Mbit/s takes ~34 s.
BODY_READ_TIMEOUT_S = 60.0
# Reasons (the `reason` label). Parser reasons (ParseError.reason and
# ParsedPayload.rejects keys) are counted under their own names.
R_MISSING_TOKEN = "missing_token"
R_BAD_TOKEN = "bad_token"
R_BODY_TOO_LARGE = "body_too_large"
R_DECOMPRESSED_TOO_LARGE = "decompressed_too_large"
R_BAD_GZIP = "bad_gzip"
R_UNSUPPORTED_ENCODING = "unsupported_encoding"
R_TOO_OFTEN = "too_often"
R_TOO_MANY_FAILURES = "too_many_failures"
R_BODY_TIMEOUT = "body_timeout"
R_INVALID_JSON = "invalid_json"
R_INVALID_FIELD = "invalid_field"
R_NOT_FOUND = "not_found"
R_METHOD_NOT_ALLOWED = "method_not_allowed"
R_CONFLICT = "conflict"
R_UNKNOWN_NODE = "unknown_node"
R_NO_ADMIN_TOKEN = "no_admin_token"
R_DATABASE_UNAVAILABLE = "database_unavailable"
R_STORAGE_UNAVAILABLE = "storage_unavailable"
# Told to clients when the database did not answer within the deadline.
DATABASE_RETRY_AFTER_S = 5


class Rejected(Exception):
    """A request refused with ``status``; ``reason`` is a short code, ``message`` for the client."""

    def __init__(self, status: int, reason: str, message: str, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})


# Work abandoned at its deadline, kept referenced until it ends (see `within_deadline`).
_ABANDONED: set[asyncio.Future] = set()


async def within_deadline(work: Awaitable[Any], seconds: float) -> Any:
    """``work``'s result, or a 503 ``database_unavailable`` (with Retry-After) after ``seconds``.

    The answer does not wait for the abandoned work to end (issue 15, item 3):
    psycopg answers a cancelled query by asking the server to cancel it and
    waiting up to 10 s more (psycopg's AsyncConnection._try_cancel), which a
    frozen server never grants. So the work runs as its own task, is
    cancelled at the deadline and left to finish (and give its connection
    back) on its own, while the request is answered at once.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        task.cancel()
        _ABANDONED.add(task)
        task.add_done_callback(_forget)
        raise Rejected(503, R_DATABASE_UNAVAILABLE, f"the database did not answer within {seconds:g} s; retry later",
                       headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)}) from None
    except asyncio.CancelledError:
        task.cancel()
        raise


def _forget(task: asyncio.Future) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned query's error is expected, not news


def content_encoding(request: web.Request) -> str:
    """The body's one content coding, lower-cased ('' when none); 415 for anything but gzip or identity."""
    raw = request.headers.get("Content-Encoding", "")
    coding = raw.strip().lower()
    if coding in GZIP_ENCODINGS or coding in IDENTITY_ENCODINGS:
        return coding
    raise Rejected(415, R_UNSUPPORTED_ENCODING,
                   f"Content-Encoding {raw[:40]!r} is not supported; send gzip or no encoding",
                   headers={"Accept-Encoding": "gzip, identity"})


class Inflater:
    """Incremental gunzip with an output limit; multi-member streams as gzip(1) reads them."""

    def __init__(self, max_out: int) -> None:
        self.max_out = max_out
        self.size = 0
        self.parts: list[bytes] = []
        self._z = zlib.decompressobj(GZIP_WBITS)
        self._member_started = False  # input seen for the current member

    def feed(self, data: bytes) -> None:
        """Inflate ``data``; raises Rejected 413 past ``max_out`` and 400 on a corrupt stream."""
        try:
            while True:
                if self._z.eof:
                    # The next member, after the NUL padding gzip(1) tolerates.
                    data = data.lstrip(b"\0")
                    if not data:
                        return
                    self._z = zlib.decompressobj(GZIP_WBITS)
                if data:
                    self._member_started = True
                out = self._z.decompress(data, INFLATE_STEP)
                self._take(out)
                if self._z.eof:
                    data = self._z.unused_data
                    self._member_started = False
                    continue
                data = self._z.unconsumed_tail
                # A full step may leave output pending inside zlib with no
                # input left: ask again until a call returns less than a step.
                if not data and len(out) < INFLATE_STEP:
                    return
        except zlib.error as exc:
            raise Rejected(400, R_BAD_GZIP, f"the gzip body is corrupt: {exc}") from None

    def finish(self) -> bytes:
        """The whole inflated body; 400 if the stream stopped inside a member."""
        if self._member_started and not self._z.eof:
            raise Rejected(400, R_BAD_GZIP, "the gzip body is truncated")
        return b"".join(self.parts)

    def _take(self, out: bytes) -> None:
        self.size += len(out)
        if self.size > self.max_out:
            raise Rejected(413, R_DECOMPRESSED_TOO_LARGE,
                           f"the body inflates to more than {self.max_out} bytes")
        self.parts.append(out)


async def read_body(request: web.Request, *, max_bytes: int, max_decompressed: int | None = None,
                    raw: bool = False) -> bytes:
    """The request body, gunzipped if so encoded, within the limits (413 past them).

    ``raw``: the body as sent, whatever its Content-Encoding, for a caller that
    decodes it itself (remote_write's snappy, collector/remote_write.py).
    """
    coding = "" if raw else content_encoding(request)
    gzipped = coding in GZIP_ENCODINGS
    if gzipped and max_decompressed is None:
        raise Rejected(415, R_UNSUPPORTED_ENCODING, "this endpoint takes an unencoded body")
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise Rejected(413, R_BODY_TOO_LARGE, f"the body is larger than {max_bytes} bytes")
    inflater = Inflater(max_decompressed) if gzipped and max_decompressed is not None else None
    parts: list[bytes] = []
    received = 0
    deadline = asyncio.get_running_loop().time() + BODY_READ_TIMEOUT_S
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await request.content.readany()
        except TimeoutError:
            raise Rejected(408, R_BODY_TIMEOUT, f"the body did not arrive within {BODY_READ_TIMEOUT_S:g} s",
                           headers={"Connection": "close"}) from None
        if not chunk:
            break
        received += len(chunk)
        if received > max_bytes:
            raise Rejected(413, R_BODY_TOO_LARGE, f"the body is larger than {max_bytes} bytes")
        if inflater is not None:
            inflater.feed(chunk)
        else:
            parts.append(chunk)
    return inflater.finish() if inflater is not None else b"".join(parts)


async def read_json_object(request: web.Request, *, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; numbers with a fraction are Decimals (money stays exact)."""
    body = await read_body(request, max_bytes=max_bytes)
    try:
        value = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Rejected(400, R_INVALID_JSON, f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise Rejected(400, R_INVALID_JSON, "the body must be a JSON object")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def bad_field(name: str, message: str) -> Rejected:
    """A 400 for one field, with a message that names it."""
    return Rejected(400, R_INVALID_FIELD, f"{name}: {message}")


def int_field(body: Mapping[str, Any], name: str, *, lo: int, hi: int, default: int | None = None,
              required: bool = True) -> int | None:
    """``body[name]`` as an int in [lo, hi]; JSON true/false and 1.5 are refused, 15.0 is not."""
    value = body.get(name)
    if value is None:
        if default is not None or not required:
            return default
        raise bad_field(name, "is required")
    checked = numbers.json_int(value, lo=lo, hi=hi)
    if isinstance(checked, numbers.Problem):
        raise bad_field(name, f"must be an integer, got {_show(value)}" if checked.not_a_number
                        else f"must be between {lo} and {hi}, got {checked.value}")
    return checked


def str_field(body: Mapping[str, Any], name: str, *, max_len: int, min_len: int = 1,
              required: bool = True) -> str | None:
    """``body[name]`` as a stripped string of min_len..max_len characters."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_field(name, "is required")
        return None
    if not isinstance(value, str):
        raise bad_field(name, f"must be a string, got {_show(value)}")
    value = value.strip()
    if not min_len <= len(value) <= max_len:
        raise bad_field(name, f"must be {min_len} to {max_len} characters, got {len(value)}")
    if "\0" in value:
        raise bad_field(name, "must not contain NUL characters")  # PostgreSQL text cannot hold them
    return value


def http_url(name: str, value: str) -> str:
    """``value``, its scheme lower-cased, if it is an http(s) URL with a host; else a 400 naming ``name``."""
    try:
        url = URL(value)
    except (ValueError, TypeError):
        raise bad_field(name, f"{value[:100]!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host or any(c.isspace() for c in value):
        raise bad_field(name, f"{value[:100]!r} must be an http:// or https:// URL with a host")
    try:
        url.port  # noqa: B018 - an out-of-range port raises here
    except ValueError:
        raise bad_field(name, f"{value[:100]!r} has an invalid port") from None
    # The scheme in lower case: the nodes table checks '^https?://' as written.
    return url.scheme + value[len(url.scheme):]


# Plausible, not RFC 5322: one @, a dot in the domain, no spaces or angle
# brackets (the address goes into an SMTP envelope, not a display name).
_EMAIL = re.compile(r"[^@\s<>\"(),;:]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


def email_address(name: str, value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise bad_field(name, f"{value[:100]!r} is not a plausible email address")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:60] + "..."
