"""Which addresses the collector may connect to for operators (issue 15, item 1: no SSRF).

Operators choose URLs (scrape targets, webhooks); the collector runs inside
someone's network, next to its database and a cloud's metadata service. So
(DESIGN.md, "Trust boundaries") it never connects, on an operator's behalf,
to a loopback, private, link-local, shared, multicast, reserved or metadata
address, unless ``FLEETSCOPE_ALLOW_PRIVATE_TARGETS=1`` (the demo and the
tests, whose fleets live on 127.0.0.1). The rule is applied three times:

1. at registration (``refused_url``): a URL whose host is such an address
   literal, a non-canonical number that a resolver would map onto one
   (``2130706433``, ``127.1``), or a name that is local by definition
   (``localhost``, ``*.localhost``, ``metadata.google.internal``) is a 400;
2. at connection time, after DNS resolution (``AddressPolicy.resolve``, used
   by collector/fetch.py, and ``GuardedConnector`` for aiohttp): a name that
   resolves only to refused addresses is not connected to, whatever it
   resolved to at registration (DNS rebinding);
3. on every redirect: aiohttp resolves each new host through the same
   connector, and ``GuardedConnector`` checks literal addresses too (aiohttp
   skips its resolver for those).

A refusal at connection time is a ``RefusedAddress`` (an ``OSError``, as a
failed resolution is), so the scrape records a failed observation
"refused: <why>" and an alert delivery fails, with no connection made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    # (host, port) -> the addresses it resolves to; a test's resolver or getaddrinfo.
    Resolve = Callable[[str, int], Awaitable[Sequence[str]]]

ENV_ALLOW_PRIVATE = "FLEETSCOPE_ALLOW_PRIVATE_TARGETS"
# The reason counted for a URL refused at registration.
R_REFUSED_TARGET = "refused_target"

# Cloud instance-metadata services: AWS, GCP, Azure, OpenStack and most others
# answer on 169.254.169.254 (link-local anyway, named here for the message);
# AWS's IPv6 one is fd00:ec2::254; Alibaba's 100.100.100.200 (shared space).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in
                               ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"))
# Names that are local by definition (RFC 6761 "localhost") or only resolve
# to a metadata service; refused at registration without asking DNS.
LOCAL_NAMES = frozenset({"localhost", "metadata.google.internal", "metadata"})
# A host of digits, dots and hex/octal prefixes only, that is not a canonical
# dotted quad: inet_aton would still read it as an IPv4 address.
_NUMERIC_HOST = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+))*\.?")


class RefusedAddress(OSError):
    """A connection the policy does not allow; ``str()`` says why."""


def address_refusal(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why the collector must not connect to ``address`` on an operator's behalf, or None if it may.

    IPv4-mapped and NAT64-less IPv6 forms of an IPv4 address are judged as that
    address. Anything not globally routable is refused.
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    for test, what in ((ip.is_loopback, "a loopback"), (ip.is_link_local, "a link-local"),
                       (ip.is_unspecified, "an unspecified"), (ip.is_multicast, "a multicast"),
                       (ip.is_private, "a private"), (ip.is_reserved, "a reserved")):
        if test:
            return f"{ip} is {what} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def host_refusal(host: str) -> str | None:
    """Why a URL's ``host`` is refused without resolving it (a literal, a numeric form, a local name), or None."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return address_refusal(ip)
    if _NUMERIC_HOST.fullmatch(host):
        return f"{host!r} is a numeric host that is not a canonical IP address"
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return f"{host!r} is a local name"
    return None


def refused_url(url: str) -> str | None:
    """Why ``url`` may not be registered as a scrape target or webhook, or None (see the module doc)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return "not a URL"
    if not host:
        return "no host"
    return host_refusal(host)


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AddressPolicy:
    """The rule above, for one collector: ``allow_private`` turns it off (demo, tests).

    ``resolve`` replaces DNS (tests give names that point at refused
    addresses without leaving the machine); ``exempt`` names addresses
    allowed despite the rule, so that a test can serve a first hop on
    127.0.0.1 and still see a redirect to another refused address refused.
    """

    def __init__(self, *, allow_private: bool = False, resolve: Resolve | None = None,
                 exempt: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self._resolve = resolve or _getaddrinfo
        self._exempt = frozenset(ipaddress.ip_address(a) for a in exempt)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> AddressPolicy:
        """The policy ``FLEETSCOPE_ALLOW_PRIVATE_TARGETS`` asks for (1/true/yes/on allow; unset refuses)."""
        raw = (os.environ if environ is None else environ).get(ENV_ALLOW_PRIVATE, "")
        return cls(allow_private=raw.strip().lower() in ("1", "true", "yes", "on"))

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be connected to under this policy, or None."""
        if self.allow_private:
            return None
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address!r} is not an IP address"
        if ip in self._exempt:
            return None
        return address_refusal(ip)

    def url_refusal(self, url: str) -> str | None:
        """``refused_url`` under this policy: None when private targets are allowed."""
        return None if self.allow_private else refused_url(url)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` this policy allows, in resolver order; RefusedAddress if none."""
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            addresses = [host]
        except ValueError:
            if not self.allow_private and _NUMERIC_HOST.fullmatch(host.rstrip(".")):
                raise RefusedAddress(f"{host!r} is a numeric host that is not a canonical IP address") from None
            addresses = list(await self._resolve(host, port))
        allowed = [a for a in addresses if self.refusal(a) is None]
        if not allowed:
            why = self.refusal(addresses[0]) if addresses else f"{host!r} resolved to no address"
            raise RefusedAddress(why)
        return allowed


class _PolicyResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver interface over ``AddressPolicy.resolve`` (names only; see GuardedConnector)."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        out = []
        for address in await self._policy.resolve(host, port):
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            out.append({"hostname": host, "host": address, "port": port,
                        "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                        "proto": 0, "flags": socket.AI_NUMERICHOST})
        return out

    async def close(self) -> None:
        pass


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that connects only to addresses ``policy`` allows, redirects and literals included.

    Names go through the policy's resolver; aiohttp answers IP literals
    without a resolver, so its ``_resolve_host`` (aiohttp 3.x, where both
    paths meet) is checked as well.
    """

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        super().__init__(resolver=_PolicyResolver(policy), **kwargs)
        self._policy = policy

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[Any]:
        results = await super()._resolve_host(host, port, traces)
        allowed = [r for r in results if self._policy.refusal(r["host"]) is None]
        if not allowed:
            raise RefusedAddress(self._policy.refusal(results[0]["host"]) if results else f"{host!r}: no address")
        return allowed
