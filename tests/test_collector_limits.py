"""Bodies are inflated within their limit, as they arrive; a node's pushes are spaced."""

from __future__ import annotations

import gzip
import os

import pytest

from collector.ratelimit import PushRateLimiter
from collector.requests import INFLATE_STEP, Inflater, Rejected


def inflate(data: bytes, limit: int, *, chunk: int = 1000) -> bytes:
    inflater = Inflater(limit)
    for i in range(0, len(data), chunk):
        inflater.feed(data[i:i + chunk])
    return inflater.finish()


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
def test_gzip_is_inflated_whatever_the_chunking_including_several_members(chunk):
    text = os.urandom(3000).hex().encode() * 10
    two_members = gzip.compress(text) + b"\0\0" + gzip.compress(b"tail\n")
    assert inflate(two_members, 10**7, chunk=chunk) == text + b"tail\n"


def test_a_gzip_bomb_stops_at_the_limit_having_inflated_little_more_than_it():
    bomb = gzip.compress(b"\0" * (200 * 2**20), compresslevel=9)  # 200 MiB in ~200 KiB
    inflater = Inflater(2**20)
    with pytest.raises(Rejected) as refused:
        for i in range(0, len(bomb), 4096):
            inflater.feed(bomb[i:i + 4096])
    assert refused.value.status == 413 and refused.value.reason == "decompressed_too_large"
    assert inflater.size <= 2**20 + INFLATE_STEP


def test_an_output_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not():
    body = os.urandom(INFLATE_STEP * 2)
    assert inflate(gzip.compress(body), len(body)) == body
    with pytest.raises(Rejected):
        inflate(gzip.compress(body + b"x"), len(body))


@pytest.mark.parametrize("broken", [gzip.compress(b"hello world\n" * 100)[:-5], b"\x1f\x8b", b"plain text",
                                    gzip.compress(b"ok") + b"trailing junk"])
def test_a_truncated_or_corrupt_stream_is_a_400(broken):
    with pytest.raises(Rejected) as refused:
        inflate(broken, 10**6)
    assert (refused.value.status, refused.value.reason) == (400, "bad_gzip")


def test_a_node_may_push_once_per_half_interval_and_a_refused_push_gives_its_turn_back():
    now = [1000.0]
    limiter = PushRateLimiter(floor_s=1.0, clock=lambda: now[0])
    first = limiter.acquire(7, 15)
    assert first is None
    now[0] += 7.0
    with pytest.raises(Rejected) as refused:
        limiter.acquire(7, 15)
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
    limiter.acquire(8, 15)  # other nodes are not affected
    now[0] += 0.5
    previous = limiter.acquire(7, 15)
    limiter.release(7, previous)  # that push was refused: the node keeps its earlier turn
    now[0] += 0.1
    limiter.acquire(7, 15)
    assert limiter.spacing(5) == 2.5 and limiter.spacing(1) == 1.0
