"""The rate limiters: pushes per node, and failed authentications per source address.

Both answer a request that comes too soon with a 429 ``Rejected`` carrying
Retry-After (collector/requests.py), and both forget idle entries past a
bound, so that no number of nodes or addresses grows them without limit.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from collector.requests import R_TOO_MANY_FAILURES, R_TOO_OFTEN, Rejected

if TYPE_CHECKING:
    from collections.abc import Callable

# Failed authentications per source address (issue 15: 1.3k bad-token
# requests a second were never limited): a burst of FAILURE_BURST, then one
# per 1 / FAILURE_RATE_PER_S seconds; past that a source's uncached tokens are
# answered 429 without a lookup. Requests with a cached, valid token pass.
FAILURE_BURST = 20
FAILURE_RATE_PER_S = 1.0
# Sources remembered before the idle ones are forgotten.
FAILURE_LIMITER_PRUNE_AT = 65536
# Pushes remembered by the rate limiter before it forgets the stale ones.
RATE_LIMITER_PRUNE_AT = 65536


class FailureLimiter:
    """Per source address, a token bucket of authentication failures (see FAILURE_BURST).

    ``check`` raises 429 while a source's bucket is empty; ``fail`` takes a
    token. Only failures cost: a source whose requests succeed is never limited.
    """

    def __init__(self, *, burst: int = FAILURE_BURST, rate_per_s: float = FAILURE_RATE_PER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, when)

    def _tokens(self, source: str, now: float) -> float:
        tokens, when = self._buckets.get(source, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) * self.rate_per_s)

    def check(self, source: str) -> None:
        """Raise 429 (with Retry-After) if ``source`` has failed too often lately."""
        tokens = self._tokens(source, self._clock())
        if tokens < 1.0:
            retry = max(1, math.ceil((1.0 - tokens) / self.rate_per_s))
            raise Rejected(429, R_TOO_MANY_FAILURES,
                           f"too many failed authentications from this address; retry in {retry} s",
                           headers={"Retry-After": str(retry)})

    def fail(self, source: str) -> None:
        now = self._clock()
        if len(self._buckets) >= FAILURE_LIMITER_PRUNE_AT:
            self._buckets = {s: (t, w) for s, (t, w) in self._buckets.items()
                             if t + (now - w) * self.rate_per_s < self.burst}
        self._buckets[source] = (max(0.0, self._tokens(source, now) - 1.0), now)


class PushRateLimiter:
    """At most one push per node per spacing; a push in progress holds its node's turn.

    ``acquire`` records the push as started (so a second concurrent push from
    the same node is refused, and its parser cache is used by one push at a
    time); ``release`` gives the turn back when the push is rejected, so a
    refused payload does not cost the node its slot.
    """

    def __init__(self, *, floor_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor_s = floor_s
        self._clock = clock
        self._last: dict[int, float] = {}

    def spacing(self, interval_s: int) -> float:
        return max(self.floor_s, interval_s / 2)

    def acquire(self, node_id: int, interval_s: int) -> float | None:
        """Take the node's turn and return the previous push time's token; raises 429 if too soon."""
        now = self._clock()
        previous = self._last.get(node_id)
        if previous is not None:
            wait = previous + self.spacing(interval_s) - now
            if wait > 0:
                retry = max(1, math.ceil(wait))
                raise Rejected(429, R_TOO_OFTEN,
                               f"this node may push once every {self.spacing(interval_s):g} s; retry in {retry} s",
                               headers={"Retry-After": str(retry)})
        if len(self._last) >= RATE_LIMITER_PRUNE_AT:
            self._prune(now)
        self._last[node_id] = now
        return previous

    def release(self, node_id: int, previous: float | None) -> None:
        """Undo ``acquire`` for a push that was refused."""
        if previous is None:
            self._last.pop(node_id, None)
        else:
            self._last[node_id] = previous

    def _prune(self, now: float) -> None:
        # Nothing older than the longest possible spacing (interval 3600 s) matters.
        horizon = now - max(self.floor_s, 1800.0)
        self._last = {k: t for k, t in self._last.items() if t > horizon}
