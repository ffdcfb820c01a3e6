"""The text of a failed scrape: what goes into ``observations.error`` and the scraper's log lines.

Short (at most MAX_ERROR_LEN characters) and about the connection, never the
text of a foreign page (issue 15).
"""

from __future__ import annotations

import asyncio

import aiohttp

from collector.addresses import RefusedAddress

MAX_ERROR_LEN = 200


def connect_error(err: aiohttp.ClientConnectorError) -> str:
    os_error = err.os_error
    if isinstance(os_error, RefusedAddress):
        return short_error(f"refused: {os_error}")
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return short_error(f"dns: {os_error.strerror or os_error}")
    return short_error(f"connect: {getattr(os_error, 'strerror', None) or os_error}")


def short_error(err: object) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= MAX_ERROR_LEN else text[: MAX_ERROR_LEN - 3] + "..."
