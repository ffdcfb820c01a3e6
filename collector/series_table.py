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
# How many groupings of a run's series by node are kept (``SeriesTable._group``),
# per run: one per part of it that requests repeat; emptied when full.
GROUPINGS_KEPT = 8
# The bytes of runs kept (each about its request's size); past it the oldest
# are dropped, so that series gone for good (a node removed) pin no request's
# bytes. 64 MiB holds one scrape of ~1,100 hosts of 8 GPUs (58 KB each as
# remote_write sends them); a larger fleet's runs are read series by series.
RUN_BYTES_KEPT = 64 << 20
# First capacity of the table's arrays (doubled as needed).
_FIRST_CAPACITY = 4096


class Split(NamedTuple):
    """A request's samples: ``by_node`` ``{node: (entries, times ms, values)}`` (NumPy arrays for
    times and values), ``reports`` ``{node: [(role, t, x), ...]}``, and ``other``, the encoded
    series left to the message-object path."""

    by_node: dict[int, tuple[list, np.ndarray, np.ndarray]]
    reports: dict[int, list[tuple[int, int, float]]]
    other: list[bytes]


class _Run(NamedTuple):
    """Series as a request sent them, to recognise them again in one comparison (``SeriesTable.read``)."""

    number: int
    template: np.ndarray  # the request's bytes, each sample's value and timestamp zeroed
    starts: np.ndarray    # where each series' field starts in it, and its end
    sids: np.ndarray
    values: np.ndarray    # where each series' double starts (-1: the value 0.0, left out)
    times: np.ndarray     # where each series' timestamp varint starts


class SeriesTable:
    """Label bytes of a series -> (node, Entry, role), bounded: emptied when full (as re's pattern cache).

    Also the runs of series of the last requests (``_Run``), each series in
    the latest run that held it: a request that repeats a run, whole or in
    part (the same series in the same order, as a Prometheus shard sends
    them scrape after scrape), is recognised by one lookup and one
    comparison of its bytes with the run's, sample values and timestamps
    left out, without an object per series. At most one run per series is
    kept, and at most RUN_BYTES_KEPT bytes of runs.
    """

    def __init__(self, *, max_entries: int) -> None:
        self.max_entries = max_entries
        self.clear()

    def clear(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._node = np.zeros(_FIRST_CAPACITY, np.int64)
        self._role = np.zeros(_FIRST_CAPACITY, np.int8)
        self._entry = np.empty(_FIRST_CAPACITY, object)
        self._run_of = np.full(_FIRST_CAPACITY, -1, np.int64)  # series -> its latest run, and where in it
        self._index_of = np.zeros(_FIRST_CAPACITY, np.int64)
        self._runs: dict[int, _Run] = {}
        self._refs: dict[int, int] = {}  # run -> how many series it is the latest run of
        self._next_run = 0
        self._run_bytes = 0
        self._scratch = np.zeros(0, np.uint8)
        self._groupings: dict[int, dict] = {}  # run -> (from, to) -> where its series go (``_group``)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: bytes, known: tuple[int, mn.Entry | None, int]) -> int:
        """The number of the series ``key``, now classified as ``known`` (node, Entry, role)."""
        sid = len(self._ids)
        if sid == len(self._node):
            self._node = np.concatenate([self._node, np.zeros(sid, np.int64)])
            self._role = np.concatenate([self._role, np.zeros(sid, np.int8)])
            self._entry = np.concatenate([self._entry, np.empty(sid, object)])
            self._run_of = np.concatenate([self._run_of, np.full(sid, -1, np.int64)])
            self._index_of = np.concatenate([self._index_of, np.zeros(sid, np.int64)])
        self._node[sid], self._entry[sid], self._role[sid] = known
        self._ids[key] = sid
        return sid

    def read(self, raw: bytes, classify: Callable[[bytes], tuple[int, Any, int] | None],
             series: Callable[[bytes], Sequence[bytes]]) -> Split:
        """The samples of the WriteRequest ``raw`` (see ``Split`` and the module doc).

        ``classify(key)`` classifies label bytes not seen yet (None if they
        are not whole labels); ``series(raw)`` splits a WriteRequest into its
        encoded series (protobuf; it raises on bad protobuf).
        """
        if len(self._ids) >= self.max_entries:  # (before the request: its numbers stay valid through it)
            self.clear()
        data = np.frombuffer(raw, np.uint8)
        pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        other: list[bytes] = []
        parts: list[tuple[int, int, int]] = []  # (run, from, to) of each piece read from a run
        pos = 0
        while pos < len(raw):
            run = self._run_at(raw, pos)
            matched = self._match(data, pos, *run) if run is not None else None
            if matched is None:  # a run not seen before: series by series, then kept as a run
                rest = raw[pos:] if pos else raw
                piece, rest_other = self._read_series(rest, series(rest), classify)
                pieces.append(piece)
                other += rest_other
                break
            piece, pos, part = matched
            pieces.append(piece)
            parts.append(part)
        if not pieces:
            return Split({}, {}, [])
        if len(pieces) == 1:
            sids, times, xs = pieces[0]
        else:
            sids, times, xs = (np.concatenate(c) for c in zip(*pieces))
        key = parts[0] if len(parts) == len(pieces) == 1 else None  # (a request read from one run)
        return Split(*self._group(sids, times, xs, key), other)

    def _run_at(self, raw: bytes, pos: int) -> tuple[_Run, int] | None:
        """The latest run holding the series whose field starts at ``pos``, and its index there."""
        if raw[pos] != 0x0A:
            return None
        size, shift, at = 0, 0, pos + 1
        while at < len(raw) and shift < 21:
            byte = raw[at]
            size |= (byte & 0x7F) << shift
            at += 1
            shift += 7
            if byte < 0x80:
                break
        else:
            return None
        end = at + size
        if end > len(raw) or size < 18:
            return None
        cut = end - 18 if raw[end - 18:end - 15] == VALUE_SAMPLE else end - 9
        sid = self._ids.get(raw[at:cut], -1)
        if sid < 0 or self._run_of[sid] < 0:
            return None
        return self._runs[int(self._run_of[sid])], int(self._index_of[sid])

    def _match(self, data: np.ndarray, pos: int, run: _Run, i: int) -> tuple[tuple, int, tuple] | None:
        """The series of ``run`` from ``i`` on that the request repeats from ``pos``: (piece, next pos,
        (run, from, to)); None if none."""
        start = int(run.starts[i])
        length = min(data.size - pos, run.template.size - start)
        j = int(np.searchsorted(run.starts, start + length, "right")) - 1  # series i..j-1 lie whole within
        if j <= i:
            return None
        length = int(run.starts[j]) - start
        if self._scratch.size < length + 8:  # (reused: a new buffer this size costs its page faults each time)
            self._scratch = np.zeros(2 * length + 8, np.uint8)
        got = self._scratch[:length]
        np.copyto(got, data[pos:pos + length])
        values, times = run.values[i:j], run.times[i:j]
        shift = pos - start
        _zero_samples(got, values[values >= 0] - start, times - start)
        if not _same(got, run.template, start):
            # The series before the first difference still match.
            differ = int(np.argmax(got != run.template[start:start + length]))
            j = int(np.searchsorted(run.starts, start + differ, "right")) - 1
            if j <= i:
                return None
            values, times = run.values[i:j], run.times[i:j]
        words = np.ndarray((data.size - 7,), "<u8", data, strides=(1,))
        varints = words[np.minimum(times + shift - 2, data.size - 8)] >> 16  # (2 bytes before: its 8-byte word)
        ok = (varints & _CONTINUED_MASK) == _CONTINUED
        if not ok.all():  # a timestamp of another size: those series go the long way
            j = i + int(np.argmin(ok))
            if j <= i:
                return None
            values, varints = values[:j - i], varints[:j - i]
        doubles = np.ndarray((data.size - 7,), "<f8", data, strides=(1,))
        xs = np.where(values >= 0, doubles[np.maximum(values + shift, 0)], 0.0)
        return (run.sids[i:j], _varint6(varints), xs), pos + int(run.starts[j]) - start, (run.number, i, j)

    def _read_series(self, raw: bytes, series: Sequence[bytes],
                     classify: Callable[[bytes], tuple[int, Any, int] | None]) -> tuple[tuple, list]:
        """Series by series: (sids, times, values) of those read and the series left to the caller."""
        n = len(series)
        if n == 0:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)), []
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
        times = _varint6(varints)
        xs = np.where(value, doubles[at(15)], 0.0)
        cuts = np.where(value, lens - 18, lens - 9)
        if fast.all():
            chosen = None
            keys = list(map(getitem, series, map(slice, cuts.tolist())))
        else:
            chosen = np.flatnonzero(fast)
            keys = [series[i][:c] for i, c in zip(chosen.tolist(), cuts[chosen].tolist())]
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
        if chosen is None and resolved.all():
            self._keep_run(raw, lens, value, sids)
            return (sids, times, xs), []
        chosen = np.arange(n) if chosen is None else chosen
        other = sorted(set(range(n)) - set(chosen[resolved].tolist()))
        chosen = chosen[resolved]
        return (sids[resolved], times[chosen], xs[chosen]), [series[i] for i in other]

    def _keep_run(self, raw: bytes, lens: np.ndarray, value: np.ndarray, sids: np.ndarray) -> None:
        """Keep ``raw``'s series as a run, when they are all it holds (no other field), each framed minimally."""
        sizes = 1 + lens + (lens >= 0x80) + (lens >= 0x4000) + (lens >= 0x200000) + 1  # tag, length, series
        ends = np.cumsum(sizes)
        if int(ends[-1]) != len(raw) or len(np.unique(sids)) != len(sids):
            return  # (other fields, a length not in its shortest form, or a series twice: not kept)
        data = np.frombuffer(raw, np.uint8)
        starts = np.concatenate([[0], ends])
        if (data[starts[:-1]] != 0x0A).any():
            return
        template = data.copy()
        values = np.where(value, ends - 15, -1)
        times = ends - 6
        _zero_samples(template, values[value], times)
        rid = self._next_run
        self._next_run += 1
        previous = self._run_of[sids]
        for old, count in zip(*np.unique(previous[previous >= 0], return_counts=True)):
            self._refs[int(old)] -= int(count)
            if not self._refs[int(old)]:
                self._drop_run(int(old))
        self._run_of[sids] = rid
        self._index_of[sids] = np.arange(len(sids))
        self._runs[rid] = _Run(rid, template, starts, sids, values, times)
        self._refs[rid] = len(sids)
        self._groupings[rid] = {}
        self._run_bytes += template.size
        while self._run_bytes > RUN_BYTES_KEPT and len(self._runs) > 1:
            self._drop_run(next(iter(self._runs)))  # (the oldest: dicts keep insertion order)

    def _drop_run(self, rid: int) -> None:
        run = self._runs.pop(rid)
        del self._refs[rid], self._groupings[rid]
        self._run_bytes -= run.template.size
        self._run_of[run.sids[self._run_of[run.sids] == rid]] = -1

    def _group(self, sids: np.ndarray, times: np.ndarray, xs: np.ndarray, key: tuple | None) -> tuple[dict, dict]:
        """The samples by node, report series apart (see ``Split``); ``key``, (run, from, to), names
        the series ``sids`` when they are a run's part, to group them as last time."""
        kept = self._groupings.get(key[0]) if key is not None else None
        grouping = kept.get(key[1:]) if kept is not None else None
        if grouping is None:
            grouping = self._grouping(sids)
            if kept is not None:
                if len(kept) >= GROUPINGS_KEPT:
                    kept.clear()
                kept[key[1:]] = grouping
        report_at, report_of, order, nodes = grouping
        reports: dict[int, list] = {}
        for (node, role), t, x in zip(report_of, times[report_at].tolist(), xs[report_at].tolist()):
            reports.setdefault(node, []).append((role, t, x))
        times, xs = times[order], xs[order]
        return {node: (entries, times[a:b], xs[a:b]) for node, a, b, entries in nodes}, reports

    def _grouping(self, sids: np.ndarray) -> tuple:
        """Where the series ``sids`` go: (positions of report series, their (node, role)s, the
        other series' positions by node, and per node (node, from, to, its entries))."""
        nodes, roles = self._node[sids], self._role[sids]
        report_at = np.flatnonzero(roles)
        report_of = list(zip(nodes[report_at].tolist(), roles[report_at].tolist()))
        data_at = np.flatnonzero(roles == 0)
        order = data_at[np.argsort(nodes[data_at], kind="stable")]  # (a node's series keep their order)
        nodes, entries = nodes[order], self._entry[sids[order]]
        bounds = [0, *(np.flatnonzero(nodes[1:] != nodes[:-1]) + 1).tolist(), len(nodes)] if nodes.size else [0]
        return report_at, report_of, order, [(int(nodes[a]), a, b, entries[a:b].tolist())
                                             for a, b in zip(bounds, bounds[1:])]


def _same(got: np.ndarray, template: np.ndarray, start: int) -> bool:
    """Whether ``got`` equals ``template`` from ``start`` on, compared 8 bytes at a time."""
    words = got.size // 8
    if words:
        if not np.array_equal(got[:8 * words].view("<u8"),
                              np.ndarray((words,), "<u8", template, offset=start, strides=(8,))):
            return False
    return got[8 * words:].tobytes() == template[start + 8 * words:start + got.size].tobytes()


def _zero_samples(data: np.ndarray, values: np.ndarray, times: np.ndarray) -> None:
    """Zero in ``data`` the 8-byte values at ``values`` and the 6-byte timestamps at ``times``."""
    words = np.ndarray((data.size - 7,), "<u8", data, strides=(1,))
    words[values] = 0
    words[times - 2] &= np.uint64(0xFFFF)  # (the word that ends with the timestamp: its 2 bytes before kept)


def _varint6(varints: np.ndarray) -> np.ndarray:
    """The 6-byte varints in the low bytes of ``varints``, as int64 milliseconds."""
    times = varints & 0x7F
    for i in range(1, 6):
        times |= ((varints >> (8 * i)) & 0x7F) << (7 * i)
    return times.astype(np.int64)
