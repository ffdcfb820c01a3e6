"""The scrape schedule as pure functions: shards, offsets, due times, missed slots."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from collector.schedule import (
    MAX_TIMEOUT_S,
    OFFSET_GUARD_FRACTION,
    in_shard,
    next_due,
    schedule_offset,
    shard_of,
    slots_missed,
    stable_hash,
    timeout_for,
)


def test_the_hash_is_the_same_in_every_process():
    # blake2b-64 of "12345", little-endian: a constant, unlike Python's salted hash().
    assert stable_hash(12345) == stable_hash(12345)
    assert stable_hash(12345) == int.from_bytes(
        __import__("hashlib").blake2b(b"12345", digest_size=8).digest(), "little")


@given(st.lists(st.integers(min_value=1, max_value=2**62), unique=True, max_size=200),
       st.integers(min_value=1, max_value=16))
def test_shards_split_the_nodes_disjointly_and_completely(node_ids, n):
    shards = [{node for node in node_ids if in_shard(node, (i, n))} for i in range(n)]
    assert sum(len(s) for s in shards) == len(node_ids)
    assert set().union(*shards) == set(node_ids)
    for node in node_ids:
        assert node in shards[shard_of(node, n)]


def test_shards_are_balanced():
    counts = [0] * 4
    for node in range(1, 20_001):
        counts[shard_of(node, 4)] += 1
    assert all(4_700 < c < 5_300 for c in counts)


def test_offsets_are_stable_and_inside_the_guarded_interval():
    for node in range(1, 2_000):
        offset = schedule_offset(node, 15.0)
        assert offset == schedule_offset(node, 15.0)
        assert 0.0 <= offset < 15.0 * (1 - OFFSET_GUARD_FRACTION)


def test_30000_targets_at_15_s_are_spread_over_the_interval():
    offsets = [schedule_offset(node, 15.0) for node in range(1, 30_001)]
    per_second = [0] * 15
    for offset in offsets:
        per_second[int(offset)] += 1
    busy = per_second[: int(15 * (1 - OFFSET_GUARD_FRACTION))]
    # 30,000 over 12 s is 2,500 a second; no second gets much more.
    assert max(busy) < 2_700 and min(busy) > 2_300
    assert sum(per_second[12:]) == 0
    assert len(set(offsets)) > 29_900  # microsecond resolution: hardly any two fire together
    assert abs(statistics.median(offsets) - 6.0) < 0.2


def test_offsets_do_not_depend_on_the_shard():
    in_zero = [schedule_offset(node, 15.0) for node in range(1, 20_001) if shard_of(node, 3) == 0]
    assert abs(statistics.mean(in_zero) - 6.0) < 0.2


@given(st.floats(min_value=1e9, max_value=2e9), st.floats(min_value=0, max_value=11.99))
def test_the_next_due_time_is_the_first_grid_point_not_before_now(now, offset):
    due = next_due(now, offset, 15.0)
    assert now <= due < now + 15.0 + 1e-6
    k = (due - offset) / 15.0
    assert abs(k - round(k)) < 1e-6


def test_a_scrape_starting_within_its_interval_misses_nothing():
    assert slots_missed(100.0, 100.0, 15.0) == 0
    assert slots_missed(100.0, 114.9, 15.0) == 0


def test_a_scrape_that_cannot_start_within_its_interval_gives_up_every_passed_slot():
    assert slots_missed(100.0, 115.0, 15.0) == 2   # due at 100 and at 115: resume at 130
    assert slots_missed(100.0, 129.0, 15.0) == 2
    assert slots_missed(100.0, 160.0, 15.0) == 5   # 100, 115, 130, 145, 160: resume at 175


def test_the_timeout_is_shorter_than_the_interval():
    assert timeout_for(5.0) == 4.0
    assert timeout_for(15.0) == MAX_TIMEOUT_S
    assert timeout_for(3600.0) == MAX_TIMEOUT_S
