"""The series a remote_write receiver has classified, and the split of a request into them, vectorised.

Hot path, hand-written where measured (bench/bench_remote_write.py,
docs/benchmarks.md "Remote write receiver"): a Python loop that visits each
series (slice its labels, look them up, unpack its value and timestamp, append
a row) cost ~0.9 us per series, 1.5 ms per 1,000 samples, twice a push's whole
receive. Here a request costs a fixed number of NumPy and C-level ``map``
passes over its series (`split`): each series' length, its sample's tail
read at fixed offsets from its end in the joined request (Prometheus sends
one sample per series and scrape, ``prompb.VALUE_SAMPLE``/``ZERO_SAMPLE``),
its label bytes looked up in one dict (``SeriesTable``: label bytes -> a
series number; node, role and Entry as arrays indexed by it), and the rows
grouped by node with one stable sort. A series whose tail is not that layout,
or whose label bytes are not whole labels in protobuf's canonical encoding,
is left to the caller's message-object path (``Split.other``): the split
reads exactly what protobuf reads (tests/test_remote_write_decoding.py).
"""

from __future__ import annotations

from itertools import repeat
from operator import getitem
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from collector.prompb import VALUE_SAMPLE, ZERO_SAMPLE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from collector import metricnames as mn

# Offsets (from a series' end) of the sample's bytes, prompb.VALUE_SAMPLE's layout:
# 12 10 09 <8-byte double> 10 <6-byte varint timestamp>; ZERO_SAMPLE's: 12 07 10 <varint>.
_TAG_MASK = np.uint64(0xFFFFFF)
_VALUE_TAGS = np.uint64(int.from_bytes(VALUE_SAMPLE, "little"))
_ZERO_TAGS = np.uint64(int.from_bytes(ZERO_SAMPLE, "little"))
_CONTINUED_MASK = np.uint64(0x808080808080)
_CONTINUED = np.uint64(0x008080808080)
# First capacity of the table's arrays (doubled as needed).
_FIRST_CAPACITY = 4096


class Split(NamedTuple):
    """A request's samples: ``by_node`` ``{node: (entries, times ms, values)}`` (NumPy arrays for
    times and values), ``reports`` ``{node: [(role, t, x), ...]}``, and ``other``, the positions
    of the series left to the message-object path."""

    by_node: dict[int, tuple[list, np.ndarray, np.ndarray]]
    reports: dict[int, list[tuple[int, int, float]]]
    other: list[int]


class SeriesTable:
    """Label bytes of a series -> (node, Entry, role), bounded: emptied when full (as re's pattern cache)."""

    def __init__(self, *, max_entries: int) -> None:
        self.max_entries = max_entries
        self.clear()

    def clear(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._node = np.zeros(_FIRST_CAPACITY, np.int64)
        self._role = np.zeros(_FIRST_CAPACITY, np.int8)
        self._entry = np.empty(_FIRST_CAPACITY, object)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: bytes, known: tuple[int, mn.Entry | None, int]) -> int:
        """The number of the series ``key``, now classified as ``known`` (node, Entry, role)."""
        sid = len(self._ids)
        if sid == len(self._node):
            self._node = np.concatenate([self._node, np.zeros(sid, np.int64)])
            self._role = np.concatenate([self._role, np.zeros(sid, np.int8)])
            self._entry = np.concatenate([self._entry, np.empty(sid, object)])
        self._node[sid], self._entry[sid], self._role[sid] = known
        self._ids[key] = sid
        return sid

    def split(self, series: Sequence[bytes],
              classify: Callable[[bytes], tuple[int, Any, int] | None]) -> Split:
        """Each series' sample by node (see the module doc); ``classify(key)`` classifies label
        bytes not seen yet, None if they are not whole labels (the series is then ``other``)."""
        n = len(series)
        if n == 0:
            return Split({}, {}, [])
        if len(self._ids) >= self.max_entries:  # (before the request: its numbers stay valid through it)
            self.clear()
        series = list(series)  # (protobuf's repeated bytes make a new object on each reading)
        lens = np.array(list(map(len, series)), np.int64)  # (measured: 3x np.fromiter's time)
        joined = b"".join(series)
        pad = max(0, 8 - len(joined))  # (the 8-byte windows below need 8 bytes)
        buf = np.frombuffer(bytes(pad) + joined if pad else joined, np.uint8)
        ends = np.cumsum(lens) + pad
        # The 8 bytes from each byte on, as an unsigned and as a double (unaligned views):
        # one gather reads a series' tag bytes, its value or its timestamp.
        words = np.ndarray((buf.size - 7,), "<u8", buf, strides=(1,))
        doubles = np.ndarray((buf.size - 7,), "<f8", buf, strides=(1,))
        last = buf.size - 8

        def at(back: int) -> np.ndarray:  # where each series' byte ``back`` from its end is (masked by length)
            return np.clip(ends - back, 0, last)

        value = (lens >= 18) & ((words[at(18)] & _TAG_MASK) == _VALUE_TAGS) & (buf[ends - 7] == 0x10)
        zero = ~value & (lens >= 9) & ((words[at(9)] & _TAG_MASK) == _ZERO_TAGS)
        varints = words[at(8)] >> 16  # (the 6 bytes after the 0x10 that ends either layout)
        # A 6-byte varint: five bytes with the continuation bit, the last without (our era's ms).
        fast = (value | zero) & ((varints & _CONTINUED_MASK) == _CONTINUED)
        times = varints & 0x7F
        for i in range(1, 6):
            times |= ((varints >> (8 * i)) & 0x7F) << (7 * i)
        xs = np.where(value, doubles[at(15)], 0.0)
        cuts = np.where(value, lens - 18, lens - 9)
        if fast.all():
            at = None
            keys = list(map(getitem, series, map(slice, cuts.tolist())))
        else:
            at = np.flatnonzero(fast)
            keys = [series[i][:c] for i, c in zip(at.tolist(), cuts[at].tolist())]
        get = self._ids.get
        sids = np.array(list(map(get, keys, repeat(-1))), np.int64)
        for i in np.flatnonzero(sids < 0).tolist():
            key = keys[i]
            sid = get(key, -1)  # (the same series twice in one request)
            if sid < 0:
                known = classify(key)
                sid = -2 if known is None else self.add(key, known)
            sids[i] = sid
        resolved = sids >= 0
        if at is None and resolved.all():
            other: list[int] = []
        else:
            at = np.arange(n) if at is None else at
            other = sorted(set(range(n)) - set(at[resolved].tolist()))
            at, sids = at[resolved], sids[resolved]
        times = times.astype(np.int64)
        if at is not None:
            times, xs = times[at], xs[at]
        nodes, roles = self._node[sids], self._role[sids]
        reports: dict[int, list] = {}
        if roles.any():
            for i in np.flatnonzero(roles).tolist():
                reports.setdefault(int(nodes[i]), []).append((int(roles[i]), int(times[i]), float(xs[i])))
            keep = roles == 0
            nodes, sids, times, xs = nodes[keep], sids[keep], times[keep], xs[keep]
        by_node: dict[int, tuple[list, np.ndarray, np.ndarray]] = {}
        if nodes.size:
            order = np.argsort(nodes, kind="stable")  # (a node's series keep their order)
            nodes, sids, times, xs = nodes[order], sids[order], times[order], xs[order]
            bounds = [0, *(np.flatnonzero(nodes[1:] != nodes[:-1]) + 1).tolist(), len(nodes)]
            entries = self._entry[sids]
            for a, b in zip(bounds, bounds[1:]):
                by_node[int(nodes[a])] = (entries[a:b].tolist(), times[a:b], xs[a:b])
        return Split(by_node, reports, other)
