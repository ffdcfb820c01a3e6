"""The scrape schedule: which replica scrapes a node, and when.

Pure functions of a node id, its period and the clock, the same in every
process and on every replica (collector/scrape.py's scheduler uses them):

- A replica keeps only its shard: ``stable_hash(node_id) % n == i``
  (:func:`shard_of`, :func:`in_shard`).
- Each target is scraped at ``offset + k * interval`` on the epoch-aligned
  grid, ``offset`` a stable hash of its node id (:func:`schedule_offset`), so
  30,000 targets at 15 s are spread over the interval, not fired at once
  (:func:`next_due`).
- A scrape that cannot start within its interval is not made late: its slots
  are skipped (:func:`slots_missed`), and the target resumes at its own offset.
- The per-target timeout is shorter than the interval (:func:`timeout_for`).
"""

from __future__ import annotations

import hashlib
import math

# A scrape may take at most this long, and never more than TIMEOUT_FRACTION of
# its interval (Prometheus' scrape_timeout defaults to 10 s and must not
# exceed the interval), so an attempt always ends before the next is due.
MAX_TIMEOUT_S = 10.0
TIMEOUT_FRACTION = 0.8
# Offsets are kept out of the last OFFSET_GUARD_FRACTION of the interval: an
# observation's slot is the slot of its *receive* time, so a scrape due just
# before a slot boundary would land in the next slot whenever it is a little
# slow, leaving one slot empty and the next with two. A target due at most
# 80 % into its interval has 3 s (at 15 s) of latency before that happens.
OFFSET_GUARD_FRACTION = 0.2


def stable_hash(node_id: int, *, purpose: bytes = b"") -> int:
    """A 64-bit hash of a node id, the same in every process and on every replica.

    blake2b (8-byte digest, ``person=purpose``) of the id's decimal text, read
    little-endian; Python's ``hash()`` is salted per process and would split
    shards differently on each replica.
    """
    digest = hashlib.blake2b(str(int(node_id)).encode(), digest_size=8, person=purpose).digest()
    return int.from_bytes(digest, "little")


def shard_of(node_id: int, n: int) -> int:
    """The shard (0 to n-1) that scrapes ``node_id`` among ``n`` replicas."""
    return stable_hash(node_id) % n


def in_shard(node_id: int, shard: tuple[int, int]) -> bool:
    """Whether replica ``shard = (i, n)`` scrapes ``node_id``."""
    i, n = shard
    return shard_of(node_id, n) == i


def schedule_offset(node_id: int, period_s: float) -> float:
    """Seconds after each epoch-aligned interval start at which the node is scraped.

    Stable per node, uniform over [0, (1 - OFFSET_GUARD_FRACTION) * period_s)
    at microsecond resolution. Uses a hash independent of the shard's, so the
    targets of one shard are as spread as the whole fleet's.
    """
    span_us = max(1, int(period_s * (1.0 - OFFSET_GUARD_FRACTION) * 1_000_000))
    return (stable_hash(node_id, purpose=b"offset") % span_us) / 1_000_000


def next_due(now: float, offset: float, period_s: float) -> float:
    """The first time ``offset + k * period_s`` (k an integer) at or after ``now``."""
    k = math.ceil((now - offset) / period_s)
    due = offset + k * period_s
    return due if due >= now else due + period_s  # float rounding


def timeout_for(period_s: float, max_timeout_s: float = MAX_TIMEOUT_S) -> float:
    """The scrape timeout for a target scraped every ``period_s``."""
    return min(max_timeout_s, TIMEOUT_FRACTION * period_s)


def slots_missed(due: float, start: float, period_s: float) -> int:
    """How many of a target's due times in [due, start] a scrape starting at ``start`` gives up.

    0 when it starts within its interval (``start - due < period_s``);
    otherwise every due time up to and including the latest one at or before
    ``start``: the target waits for its next due time after ``start``.
    """
    late = start - due
    if late < period_s:
        return 0
    return math.floor(late / period_s) + 1
