"""The collector's HTTP server: how long a connection may take, and answers to requests that cannot be read.

aiohttp's defaults suit a trusted network, not hosts on the internet
(issue 15, item 7):

- an idle or half-open connection, or one sending its headers a byte at a
  time, is held for ``keepalive_timeout``, 3630 s by default; here it is
  HEADER_TIMEOUT_S (aiohttp's keep-alive timer starts when a connection is
  made and closes it while no complete request has arrived), and a body must
  arrive within collector/requests.py's BODY_READ_TIMEOUT_S;
- a request whose head cannot be parsed (a header over the size limit, a NUL
  in a header) is answered by aiohttp's ``RequestHandler.handle_error``: a
  text/plain 400 and a logged traceback. Here it is a JSON 400 like every
  other refusal (``{"error", "reason"}``), logged in one line.

``CollectorRunner`` is the ``web.AppRunner`` that ``collector.process.run`` uses.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

log = logging.getLogger("fleetscope.collector")

# Longer than a pushing exporter's interval (15 s) plus a margin, so that its
# kept-alive connection is reused, yet seconds, not an hour.
HEADER_TIMEOUT_S = 20.0
# The reason of a request aiohttp could not parse.
R_BAD_REQUEST = "bad_request"


class _JsonErrorHandler(RequestHandler):
    """aiohttp's request handler, but its own errors are answered in JSON and logged without a traceback."""

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started")
        detail = " ".join(str(getattr(exc, "message", None) or exc or message or "").split())[:200]
        log.info("unreadable request from %s: %s %s", request.remote, status, detail)
        reason = R_BAD_REQUEST if status == 400 else f"http_{status}"
        response = web.Response(status=status, content_type="application/json",
                                text=json.dumps({"error": f"the request could not be read: {detail}",
                                                 "reason": reason}))
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class CollectorRunner(web.AppRunner):
    """An AppRunner whose connections get ``_JsonErrorHandler`` (see the module doc)."""

    async def _make_server(self) -> web.Server:
        server: Any = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same object, only its handler factory changed
        return server
