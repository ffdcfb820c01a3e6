"""The collector's operator API, from Python: what ``fleetscope node`` / ``fleetscope channel`` and /operator call.

Writes by operators (registering a node, pausing it, adding, testing and
removing alert channels) have one path: the collector's HTTP API (DESIGN.md,
Contract: Collector HTTP). There the token is checked (with the collector's
limits on failed attempts), every field is validated, scrape and webhook URLs
are refused when they point at private addresses (collector/addresses.py,
checked after DNS and again at each connection), and a token can only touch
its own operator's rows. The CLI and the dashboard are clients of it, so none
of those checks exists twice and neither needs write access to the database.

Synchronous on purpose (urllib from the standard library): the CLI and the
dashboard's Flask callbacks are synchronous, and each call is one request.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fleetscope.errors import FleetscopeError

# The collector of `fleetscope collector` / `fleetscope demo` on this machine
# (collector/settings.py DEFAULT_PORT).
DEFAULT_COLLECTOR_URL = "http://127.0.0.1:9300"
COLLECTOR_URL_ENV = "FLEETSCOPE_COLLECTOR_URL"
OPERATOR_TOKEN_ENV = "FLEETSCOPE_OPERATOR_TOKEN"
# Above the collector's own alert timeout (10 s by default), which bounds a
# channel test, and its database deadline for everything else.
TIMEOUT_S = 20.0
USER_AGENT = "fleetscope-client/1"


class CollectorError(FleetscopeError):
    """The collector refused a request (``status`` and its ``reason`` code) or could not be reached (status 0)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def collector_url(value: str | None = None) -> str:
    """The collector's base URL: ``value``, else $FLEETSCOPE_COLLECTOR_URL, else the local default; checked."""
    url = (value or os.environ.get(COLLECTOR_URL_ENV) or DEFAULT_COLLECTOR_URL).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FleetscopeError(f"collector URL {url!r}: must be http(s)://host[:port] (--collector or "
                              f"${COLLECTOR_URL_ENV})")
    return url


def operator_token(value: str | None = None) -> str:
    """The operator token: ``value``, else $FLEETSCOPE_OPERATOR_TOKEN; an error naming both when neither is set."""
    token = (value or os.environ.get(OPERATOR_TOKEN_ENV) or "").strip()
    if not token:
        raise FleetscopeError(f"no operator token: pass --token or set ${OPERATOR_TOKEN_ENV} (the token "
                              "'fleetscope operator create' printed)")
    return token


@dataclass(frozen=True)
class CollectorClient:
    """Calls to one collector as one operator (its token)."""

    base_url: str
    token: str
    timeout_s: float = TIMEOUT_S

    # -- nodes ---------------------------------------------------------------------

    def register_node(self, name: str, *, scrape_url: str | None = None, interval_s: int | None = None,
                      grace_s: int | None = None) -> dict[str, Any]:
        """``POST /api/v1/nodes``: ``{"node_id", "node_token", "name", "interval_s", "grace_s"}`` (token shown once)."""
        body: dict[str, Any] = {"name": name, "scrape_url": scrape_url or None}
        if interval_s is not None:
            body["interval_s"] = interval_s
        if grace_s is not None:
            body["grace_s"] = grace_s
        return self._call("POST", "/api/v1/nodes", body)

    def set_paused(self, node_id: int, paused: bool) -> dict[str, Any]:
        """``PATCH /api/v1/nodes/{id}``: ``{"node_id", "name", "paused"}``."""
        return self._call("PATCH", f"/api/v1/nodes/{int(node_id)}", {"paused": paused})

    def view(self) -> dict[str, Any]:
        """``GET /api/v1/operator``: the operator's nodes, channels and alert history (fleetscope/operators.py)."""
        return self._call("GET", "/api/v1/operator")

    # -- channels ------------------------------------------------------------------

    def add_channel(self, kind: str, target: str) -> dict[str, Any]:
        """``POST /api/v1/channels``: ``{"channel_id", "kind", "target"}`` (the existing one if already added)."""
        return self._call("POST", "/api/v1/channels", {"kind": kind, "target": target})

    def channels(self) -> list[dict[str, Any]]:
        """``GET /api/v1/channels``."""
        return self._call("GET", "/api/v1/channels")["channels"]

    def remove_channel(self, channel_id: int) -> None:
        """``DELETE /api/v1/channels/{id}``."""
        self._call("DELETE", f"/api/v1/channels/{int(channel_id)}")

    def test_channel(self, channel_id: int) -> dict[str, Any]:
        """``POST /api/v1/channels/{id}/test``: ``{"channel_id", "kind", "target", "ok", "error"}``."""
        return self._call("POST", f"/api/v1/channels/{int(channel_id)}/test", {})

    # -- transport -----------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "User-Agent": USER_AGENT, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + quote(path), data=data, method=method, headers=headers)
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise _refusal(err) from None
        except (urllib.error.URLError, OSError) as err:
            why = getattr(err, "reason", err)
            raise CollectorError(f"cannot reach the collector at {self.base_url}: {why} (is it running? "
                                 f"--collector or ${COLLECTOR_URL_ENV} names another)") from None
        return json.loads(raw) if raw else None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The token goes to the collector named and nowhere else: a redirect is an error, not followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _refusal(err: urllib.error.HTTPError) -> CollectorError:
    """The collector's JSON error (``{"error": message, "reason": code}``) as one sentence."""
    try:
        body = json.loads(err.read() or b"{}")
    except ValueError:
        body = {}
    message = body.get("error") if isinstance(body, dict) else None
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    if err.code == 401:
        text = f"the collector refused the operator token ({message or 'not valid'})"
    else:
        code = f"HTTP {err.code}, {reason}" if reason else f"HTTP {err.code}"
        text = f"the collector refused the request: {message or err.reason} ({code})"
    return CollectorError(text, status=err.code, reason=reason)
