"""Parse a GPU host's Prometheus text into wide GPU rows and identity records.

The result is one `GpuSample` per GPU per payload (the `gpu_samples` row),
one `GpuIdentity` per GPU, the UUIDs flagged lost, the exporter's own health
and the values rejected by validation, counted by reason.

prometheus_client's parsers are the reference (`parse_reference`), but they
cost about 60 us per sample on the collector's 2-core machine: 6 ms for one
8-GPU dcgm-exporter scrape, 12 CPU-s per 2,000 scrapes, against a budget of
well under 0.45 CPU-s per 1,000 scrapes for the whole collector. So, as
Prometheus' scrape loop does (scrape/scrape.go, `scrapeCache`), the fast path
keeps a per-target `SeriesCache`. When a payload has exactly the shape of the
previous one from the same target (every line the same but the sample
values, the normal case for an exporter scraped every 15 s) the values are
sliced out with C-level map/itemgetter calls and no per-line Python at all.
That check needs no copy of the previous payload: the cache keeps the length
and hash of its non-value text, the target's GPUs, and a `_Shape` (line
positions and what each sample is for) that every host of the same structure
shares, ~3.5 KB per 8-GPU target instead of ~170 KB, for 30,000 targets in
one collector. A payload of a new shape is parsed line by line: series text
(`name{labels}`, everything before the value) that is canonical costs one
regex, and only other text goes to the reference; a target whose payloads
never plan keeps a map from series text to Entry, as Prometheus does.
docs/benchmarks-parse.md has the figures.

Anything the fast path cannot prove equivalent goes to the reference: a
sample line whose series text is not in the strict canonical form
(`_CANONICAL_SERIES`) or carries a timestamp, odd comment lines, and every
OpenMetrics payload whose shape is new (OpenMetrics validity depends on
neighbouring lines, so the whole payload is checked once by the reference,
and then its shape is trusted for the payloads that repeat it). Validation,
unit conversion and row assembly are shared by both paths (`_Layout`), so
tests/test_parse_differential.py checks that the fast path reads exactly
what prometheus_client reads.
"""

from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass, field
from itertools import filterfalse, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as _om_families,
)
from prometheus_client.parser import text_string_to_metric_families as _text_families

from collector import metricnames as mn

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

# Limits. A payload is one host's scrape; dcgm-exporter's defaults give about
# 20 series per GPU and nvidia_gpu_exporter about 120, so 4096 series covers a
# 16-GPU host with every field turned on, and stops a runaway exporter (or a
# hostile pusher) before it costs the collector more than one payload's work.
DEFAULT_MAX_SERIES = 4096
# Longest real label values are model names, driver and vbios versions and
# Kubernetes pod names (63 characters); 256 leaves room without letting one
# series carry a blob.
DEFAULT_MAX_LABEL_LEN = 256
# Per-target cache bound: series texts plus distinct comment lines. Prometheus
# keeps only the entries seen in the latest scrape once a cache outgrows its
# working set; we do the same when a target passes this many.
DEFAULT_CACHE_ENTRIES = 2 * DEFAULT_MAX_SERIES

# Validation limits.
MAX_UTIL_PCT = 100.0          # above: clamped, reason "clamped_util"
MAX_TEMP_C = 150.0            # GPUs shut down near 100 C; above: "absurd_temp"
MAX_POWER_W = 1500.0          # above, when the card's limit is unknown: "absurd_power"
MAX_POWER_FACTOR = 1.5        # above 1.5 x the card's own max power limit: "absurd_power"
# DCGM reports a missing or unsupported value as an int64 sentinel just below
# 2**63 (DCGM_INT64_BLANK = 0x7ffffffffffffff0 and the NOT_FOUND/
# NOT_SUPPORTED/NOT_PERMISSIONED codes above it; dcgm-exporter's own README
# shows DCGM_FI_DEV_MEMORY_TEMP 9223372036854775794). As a double they all
# round to 2**63, which would not even fit a bigint column.
DCGM_BLANK = 2.0 ** 63

# Reasons counted in ParsedPayload.rejects.
R_NAN = "nan"
R_NEGATIVE = "negative"
R_CLAMPED_UTIL = "clamped_util"
R_ABSURD_POWER = "absurd_power"
R_ABSURD_TEMP = "absurd_temp"
R_DCGM_BLANK = "dcgm_blank"
R_LABEL_TOO_LONG = "label_too_long"
# Reasons a whole payload is refused (ParseError.reason).
R_TOO_MANY_SERIES = "too_many_series"
# A GPU UUID the database cannot key on (gpus.gpu_uuid holds at most 128
# characters; NVML's are 40): refused whole, so one node cannot make the
# writer's transaction, shared by every node, fail.
R_INVALID_UUID = "invalid_uuid"
MAX_UUID_LEN = 128
_STORABLE = re.compile(r"[^\x00-\x1f\x7f]+")
R_UNPARSABLE = "unparsable"

OPENMETRICS_TYPE = "application/openmetrics-text"

# A series text the fast path may cache: a legacy metric name, optionally
# followed by `{name="value",...}` with no whitespace outside the quotes, no
# trailing comma and no reserved (`__`) label names. For such text both
# prometheus_client parsers read `text + " " + value` as exactly this series
# with that value, whatever the value token is, so the parse can be cached.
# Anything else is left to the reference parser, line by line.
_LABEL_NAME = r"(?!__)[a-zA-Z_][a-zA-Z0-9_]*"
# (The value pattern is the unrolled form of (?:[^"\\]|\\.)*: sre runs it
# several times faster, and every new series of a cold target goes through it.)
_VALUE_BODY = r'[^"\\\n]*(?:\\.[^"\\\n]*)*'
_LABEL_VALUE = rf'"{_VALUE_BODY}"'
_CANONICAL_SERIES = re.compile(
    rf"[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{{(?:{_LABEL_NAME}={_LABEL_VALUE}"
    rf"(?:,{_LABEL_NAME}={_LABEL_VALUE})*)?\}})?"
)
_LABEL_PAIR = re.compile(rf'({_LABEL_NAME})="({_VALUE_BODY})"')
# The reference's escape handling (prometheus_client.parser._replace_escaping):
# only these three are escapes; any other backslash stays as written.
_ESCAPES = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}
_ESCAPE = re.compile(r'\\[\\n"]')
# `# HELP name ...` and `# TYPE name type` lines the text parser always accepts.
_PLAIN_COMMENT = re.compile(
    r"# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]*(?: .*)?|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* +\S.*)"
)
# A value token OpenMetrics refuses although float() takes it (the text parser
# refuses only the underscore): surrounding whitespace and digit separators.
_OM_BAD_VALUE = re.compile(r"[\s_]")
# OpenMetrics sample suffixes the reference checks for NaN and sign.
_OM_NOT_NAN = ("_total", "_sum", "_count", "_bucket", "_gcount", "_gsum")
_OM_NOT_NEGATIVE = ("_total", "_sum", "_count", "_bucket", "_gcount")
# Families whose validity depends on values across lines; never planned.
_OM_UNPLANNED_TYPES = frozenset({"histogram", "gaugehistogram", "summary", "stateset"})

_OTHER = 1  # marks a validated non-sample line in SeriesCache._others
# A sample's role in a payload: (Entry kind, GPU slot or -1, target,
# transform, xid); see `_split`.
_Role = tuple[int, int, int, int, "int | None"]
# Parts of `str.rpartition(" ")` of a sample line: series text, value token.
_HEAD = itemgetter(0)
_TOKEN = itemgetter(2)
# Entry kinds whose sample value the result uses.
_VALUE_KINDS = frozenset({mn.K_COLUMN, mn.K_IDENTITY, mn.K_MAX_POWER, mn.K_LOST,
                          mn.K_EXPORTER_OK, mn.K_XID_TS})


class ParseError(Exception):
    """A payload that cannot be accepted: `reason` is a short code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class GpuSample(NamedTuple):
    """One row of `gpu_samples`, in the table's column order."""

    gpu_uuid: str
    gpu_index: int | None
    gpu_util: float | None
    mem_copy_util: float | None
    fb_used_mib: float | None
    fb_free_mib: float | None
    power_w: float | None
    energy_mj: float | None
    temp_c: float | None
    sm_clock_mhz: float | None
    mem_clock_mhz: float | None
    pcie_replay: int | None
    ecc_sbe: int | None
    ecc_dbe: int | None
    xid_last: int | None
    lost: bool


class GpuIdentity(NamedTuple):
    """What a GPU says it is; None where the producer does not say."""

    uuid: str
    model: str | None
    serial: str | None
    pci_bus_id: str | None
    pci_device_id: str | None
    pci_subsystem_id: str | None
    board_part_number: str | None
    architecture: str | None
    virtualization_mode: str | None
    memory_total_bytes: int | None
    sm_count: int | None
    max_sm_clock_mhz: float | None
    max_mem_clock_mhz: float | None
    driver_version: str | None
    vbios_version: str | None


assert GpuSample._fields == mn.SAMPLE_COLUMNS
assert GpuIdentity._fields == mn.IDENTITY_FIELDS


@dataclass(slots=True)
class ParsedPayload:
    """The result of parsing one payload."""

    samples: list[GpuSample]
    identities: list[GpuIdentity]
    lost: set[str]
    exporter_ok: bool | None
    rejects: dict[str, int]
    series: int
    # Which path produced it ("warm", "cold" or "reference"): for the
    # collector's own metrics and for tests; not part of the result's value.
    path: str = field(default="reference", compare=False)


def _getter(indices: Sequence[int]) -> Callable[[Sequence], tuple]:
    """itemgetter that always returns a tuple, whatever the count."""
    if len(indices) == 1:
        only = indices[0]
        return lambda seq: (seq[only],)
    if not indices:
        return lambda seq: ()
    return itemgetter(*indices)


def _to_float(value: float | int) -> float:
    # The reference yields ints for integral tokens; a 400-digit one does not
    # fit a double, where float() of the same token gives inf.
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _convert(transform: int, x: float) -> float:
    if transform == mn.T_NONE:
        return x
    if transform == mn.T_RATIO_TO_PCT:
        # nvidia_gpu_exporter multiplied nvidia-smi's integer percent by 0.01;
        # rounding undoes the binary noise (0.07 * 100 = 7.000000000000001).
        return round(x * 100.0, 6)
    if transform == mn.T_BYTES_TO_MIB:
        return x / 1048576.0
    if transform == mn.T_HZ_TO_MHZ:
        return x / 1e6
    if transform == mn.T_J_TO_MJ:
        return x * 1000.0
    if transform == mn.T_MIB_TO_BYTES:
        return x * 1048576.0
    raise AssertionError(transform)


def _count(rejects: dict[str, int], reason: str) -> None:
    rejects[reason] = rejects.get(reason, 0) + 1


def _check_raw(x: float, rejects: dict[str, int]) -> bool:
    """Checks every stored number passes; counts and returns False if not."""
    if x - x != 0.0:
        _count(rejects, R_NAN)
        return False
    if x >= DCGM_BLANK:
        _count(rejects, R_DCGM_BLANK)
        return False
    if x < 0.0:
        _count(rejects, R_NEGATIVE)
        return False
    return True


class _Gpus:
    """A target's own GPUs, in slot order: what a shared `_Layout` leaves out.

    Slots are numbered in the order a payload first names each UUID, so two
    hosts with the same payload structure put their GPUs in the same slots.
    """

    __slots__ = ("uuids", "indexes", "identities", "constants")

    def __init__(self, uuids: Sequence[str], indexes: Sequence[int | None],
                 identities: Sequence[GpuIdentity]) -> None:
        self.uuids = tuple(uuids)
        self.indexes = tuple(indexes)
        self.identities = tuple(identities)
        # The tail of `_Layout._assemble_bulk`'s pool (see `_build_bulk`).
        self.constants = (None, False, *self.uuids, *self.indexes)


def _split(entries: Sequence[mn.Entry]) -> tuple[_Gpus, tuple[_Role, ...]]:
    """Return the payload's own GPUs and the role of each sample.

    A role is an Entry with its UUID replaced by the GPU's slot and its
    identity labels left out: what the row assembly needs, and the same for
    every host whose payload differs only in UUIDs, host names and other
    label values. A `_Layout` is built from roles, so such hosts share one.
    Where a GPU's identity field is given twice, an info metric wins over a
    series label, and among equals the first wins.
    """
    slots: dict[str, int] = {}
    uuids: list[str] = []
    indexes: list[int | None] = []
    idents: list[dict[int, tuple[object, int]]] = []
    roles: list[_Role] = []
    for e in entries:
        uuid = e.uuid
        if uuid is None:
            roles.append((e.kind, -1, e.target, e.transform, e.xid))
            continue
        slot = slots.get(uuid)
        if slot is None:
            slot = slots[uuid] = len(uuids)
            uuids.append(uuid)
            indexes.append(None)
            idents.append({})
        if indexes[slot] is None:
            indexes[slot] = e.gpu_index
        known = idents[slot]
        for fld, value in e.identity:
            have = known.get(fld)
            if have is None or have[1] > e.priority:
                known[fld] = (value, e.priority)
        roles.append((e.kind, slot, e.target, e.transform, e.xid))
    for uuid in uuids:
        if len(uuid) > MAX_UUID_LEN or not _STORABLE.fullmatch(uuid):
            raise ParseError(R_INVALID_UUID, f"GPU UUID {uuid[:40]!r}... is over {MAX_UUID_LEN} characters or "
                             "holds control characters" if len(uuid) > 40 else
                             f"GPU UUID {uuid!r} is over {MAX_UUID_LEN} characters or holds control characters")
    identities = [
        GpuIdentity(uuid, *(_storable(known[f][0]) if f in known else None
                            for f in range(1, len(mn.IDENTITY_FIELDS))))
        for uuid, known in zip(uuids, idents)
    ]
    return _Gpus(uuids, indexes, identities), tuple(roles)


def _storable(value: object) -> object:
    """Identity text as PostgreSQL can store it: without NUL (text cannot hold one)."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "")
    return value


class _Layout:
    """How the samples of one payload structure become rows and identities.

    Built from the role of every sample (`_split`), in payload order; holds
    nothing of a particular host, so targets of the same structure share it
    (`_shape`); `assemble` takes the target's `_Gpus`. Only some samples
    carry a value the result uses (`value_pos`, positions among the samples);
    `assemble` takes those values, in that order. Where a GPU has several
    samples for one field, the last one wins; validation applies to the
    winning values.
    """

    def __init__(self, roles: Sequence[_Role]) -> None:
        value_pos = [pos for pos, r in enumerate(roles) if r[0] in _VALUE_KINDS]
        self.value_pos = value_pos
        self.value_get = _getter(value_pos)
        at = {pos: i for i, pos in enumerate(value_pos)}  # sample position -> value index
        cells: dict[tuple[int, int], tuple[int, int]] = {}
        identity_values: dict[tuple[int, int], int] = {}
        max_power: dict[int, int] = {}
        lost: dict[int, int] = {}
        xid_ts: dict[int, list[tuple[int, int]]] = {}
        self.exporter_ok_pos: int | None = None
        self.label_too_long = 0
        transforms: dict[int, int] = {}
        nslots = 0
        for pos, (kind, slot, target, transform, xid) in enumerate(roles):
            if kind == mn.K_REJECTED:
                self.label_too_long += 1
                continue
            if slot < 0:
                if kind == mn.K_EXPORTER_OK:
                    self.exporter_ok_pos = at[pos]
                continue
            nslots = max(nslots, slot + 1)
            if kind == mn.K_COLUMN:
                cells[(slot, target)] = (at[pos], transform)
            elif kind == mn.K_IDENTITY:
                identity_values[(slot, target)] = at[pos]
                transforms[at[pos]] = transform
            elif kind == mn.K_MAX_POWER:
                max_power[slot] = at[pos]
            elif kind == mn.K_LOST:
                lost[slot] = at[pos]
            elif kind == mn.K_XID_TS:
                xid_ts.setdefault(slot, []).append((at[pos], xid))
        self.nseries = len(roles)
        self.nslots = nslots
        self.identity_values = sorted(identity_values.items())
        self.identity_transforms = transforms
        self.max_power = max_power
        self.lost = sorted(lost.items())
        self.xid_ts = sorted(xid_ts.items())
        # (slot, column, value index, transform) of every cell, slot-major.
        self.cells = sorted((slot, col, i, transform)
                            for (slot, col), (i, transform) in cells.items())
        self._build_bulk()

    def _build_bulk(self) -> None:
        """Precompute the itemgetters of `_assemble_bulk`.

        Hot path (measured, docs/benchmarks-parse.md): a Python loop over the
        ~90 cells of an 8-GPU payload costs more than the whole C-level
        gather below, so the cells are checked and placed in bulk and only a
        payload with a suspicious value takes the per-cell loop.
        """
        cells = self.cells
        n = len(cells)
        self.cell_get = _getter([pos for _, _, pos, _ in cells])
        # The pool is [raw values..., converted..., ints..., constants...].
        pool_index = list(range(n))
        converted: dict[int, list[int]] = {}
        for i, (_, _, _, transform) in enumerate(cells):
            if transform != mn.T_NONE:
                converted.setdefault(transform, []).append(i)
        self.conversions = []
        top = n
        for transform, idx in sorted(converted.items()):
            self.conversions.append((transform, _getter(idx)))
            for i in idx:
                pool_index[i] = top
                top += 1
        ints = [i for i, (_, col, _, _) in enumerate(cells) if col in mn.INT_COLUMNS]
        self.int_get = _getter([pool_index[i] for i in ints])
        for i in ints:
            pool_index[i] = top
            top += 1
        # Then the target's `_Gpus.constants`: None, False, uuids, indexes.
        none_at, false_at, uuid_at = top, top + 1, top + 2
        index_at = uuid_at + self.nslots
        rows: list[list[int]] = [
            [uuid_at + s, index_at + s] + [none_at] * 13 + [false_at]
            for s in range(self.nslots)
        ]
        for i, (slot, col, _, _) in enumerate(cells):
            rows[slot][col] = pool_index[i]
        self.row_getters = [itemgetter(*row) for row in rows]
        self.util_get = _getter([pool_index[i] for i, c in enumerate(cells) if c[1] in mn.UTIL_COLUMNS])
        self.temp_get = _getter([pool_index[i] for i, c in enumerate(cells) if c[1] == mn.C_TEMP])
        self.power_cells = [(pool_index[i], c[0]) for i, c in enumerate(cells) if c[1] == mn.C_POWER]
        self.power_get = _getter([p for p, _ in self.power_cells])

    def assemble(self, xs: Sequence[float], gpus: _Gpus, path: str, *,
                 bulk: bool = True) -> ParsedPayload:
        """Build the payload's result from the values at `value_pos` and its GPUs."""
        rejects: dict[str, int] = {}
        if self.label_too_long:
            rejects[R_LABEL_TOO_LONG] = self.label_too_long
        limits = self._power_limits(xs) if self.max_power else None
        samples = self._assemble_bulk(xs, gpus, limits) if bulk else None
        if samples is None:
            samples = self._assemble_cells(xs, gpus, limits, rejects)
        lost: set[str] = set()
        for slot, pos in self.lost:
            x = xs[pos]
            if _check_raw(x, rejects) and x != 0.0:
                lost.add(gpus.uuids[slot])
                samples[slot] = samples[slot]._replace(lost=True)
        for slot, candidates in self.xid_ts:
            best = None
            for pos, xid in candidates:
                x = xs[pos]
                if _check_raw(x, rejects) and (best is None or x >= best[0]):
                    best = (x, xid)
            if best is not None and samples[slot].xid_last is None:
                samples[slot] = samples[slot]._replace(xid_last=best[1])
        identities = gpus.identities
        if self.identity_values:
            identities = list(identities)
            for (slot, fld), pos in self.identity_values:
                x = xs[pos]
                if identities[slot][fld] is not None or not _check_raw(x, rejects):
                    continue
                transform = self.identity_transforms[pos]
                if transform == mn.T_HEX32:
                    value: object = f"0x{int(x) & 0xFFFFFFFF:08X}"
                else:
                    x = _convert(transform, x)
                    value = int(x) if fld in mn.INT_IDENTITY_FIELDS else x
                identities[slot] = identities[slot]._replace(**{mn.IDENTITY_FIELDS[fld]: value})
        else:
            identities = list(identities)
        exporter_ok = None
        if self.exporter_ok_pos is not None:
            x = xs[self.exporter_ok_pos]
            if x - x == 0.0:
                exporter_ok = x == 1.0
            else:
                _count(rejects, R_NAN)
        return ParsedPayload(samples, identities, lost, exporter_ok, rejects,
                             self.nseries, path)

    def _power_limits(self, xs: Sequence[float]) -> list[float]:
        limits = [MAX_POWER_W] * self.nslots
        for slot, pos in self.max_power.items():
            x = xs[pos]
            # Not a stored value: a broken limit only means "unknown".
            if 0.0 < x < DCGM_BLANK:
                limits[slot] = MAX_POWER_FACTOR * x
        return limits

    def _assemble_bulk(self, xs: Sequence[float], gpus: _Gpus,
                       limits: list[float] | None) -> list[GpuSample] | None:
        """Rows when every value is ordinary, else None (see _build_bulk)."""
        vals = self.cell_get(xs)
        if vals:
            total = sum(vals)
            if total - total != 0.0 or min(vals) < 0.0 or max(vals) >= DCGM_BLANK:
                return None
        pool = list(vals)
        for transform, get in self.conversions:
            pool.extend(map(_convert, repeat(transform), get(vals)))
        pool.extend(map(int, self.int_get(pool)))
        utils = self.util_get(pool)
        if utils and max(utils) > MAX_UTIL_PCT:
            return None
        temps = self.temp_get(pool)
        if temps and max(temps) > MAX_TEMP_C:
            return None
        powers = self.power_get(pool)
        if powers:
            if limits is None:
                if max(powers) > MAX_POWER_W:
                    return None
            elif any(pool[i] > limits[slot] for i, slot in self.power_cells):
                return None
        pool.extend(gpus.constants)
        new = tuple.__new__  # GpuSample._make without its Python frame
        return [new(GpuSample, get(pool)) for get in self.row_getters]

    def _assemble_cells(self, xs: Sequence[float], gpus: _Gpus, limits: list[float] | None,
                        rejects: dict[str, int]) -> list[GpuSample]:
        """Rows one validated cell at a time; the reference for the bulk path."""
        rows = [[uuid, index] + [None] * 13 + [False]
                for uuid, index in zip(gpus.uuids, gpus.indexes)]
        for slot, col, pos, transform in self.cells:
            x = xs[pos]
            if not _check_raw(x, rejects):
                continue
            x = _convert(transform, x)
            if col in mn.UTIL_COLUMNS:
                if x > MAX_UTIL_PCT:
                    _count(rejects, R_CLAMPED_UTIL)
                    x = MAX_UTIL_PCT
            elif col == mn.C_TEMP:
                if x > MAX_TEMP_C:
                    _count(rejects, R_ABSURD_TEMP)
                    continue
            elif col == mn.C_POWER:
                if x > (MAX_POWER_W if limits is None else limits[slot]):
                    _count(rejects, R_ABSURD_POWER)
                    continue
            elif col in mn.INT_COLUMNS:
                x = int(x)
            rows[slot][col] = x
        return [GpuSample._make(row) for row in rows]


class _Shape:
    """The structure of a payload: where its samples and other lines are, what
    each sample is for, and the shared `_Layout`. Holds no text and nothing
    of one host; targets whose payloads have the same structure share one
    (`_shape`). Never changed once built.
    """

    __slots__ = ("nlines", "sample_get", "other_get", "layout", "used_get", "unused_get",
                 "openmetrics", "must_be_one", "not_nan", "not_negative", "__weakref__")

    def __init__(self, nlines: int, sample_pos: Sequence[int], layout: _Layout,
                 openmetrics: bool, must_be_one: Sequence[int] = (),
                 not_nan: Sequence[int] = (), not_negative: Sequence[int] = ()) -> None:
        samples = set(sample_pos)
        self.nlines = nlines
        self.sample_get = _getter(sample_pos)
        self.other_get = _getter([i for i in range(nlines) if i not in samples])
        self.layout = layout
        self.used_get = layout.value_get
        used = set(layout.value_pos)
        self.unused_get = _getter([j for j in range(len(sample_pos)) if j not in used])
        self.openmetrics = openmetrics
        self.must_be_one = _getter(must_be_one) if must_be_one else None
        self.not_nan = _getter(not_nan) if not_nan else None
        self.not_negative = _getter(not_negative) if not_negative else None


# Shapes in use, by their full description: a target's cold parse looks its
# structure up here, so 30,000 hosts of one kind hold one `_Shape` and one
# `_Layout` between them (docs/benchmarks-parse.md, 2026-11-24: about 25 KB
# per 8-GPU shape). Weak values: a shape no cache uses any more is dropped.
# Like `re`'s compiled-pattern cache it holds only values derived from its
# keys, so it can be shared by every parser and thread; the bound only stops
# a pathological mix of payloads (each shape is at least one live cache)
# from growing it further: a shape past it is simply not shared.
MAX_SHARED_SHAPES = 4096
_SHAPES: weakref.WeakValueDictionary[tuple, _Shape] = weakref.WeakValueDictionary()


def _shape(nlines: int, sample_pos: Sequence[int], roles: tuple[_Role, ...],
           openmetrics: bool, must_be_one: Sequence[int] = (),
           not_nan: Sequence[int] = (), not_negative: Sequence[int] = ()) -> _Shape:
    """Return the shared `_Shape` of this description, building it if new.

    The key is the whole description (compared exactly, not by a digest),
    so two structures never share a shape by accident.
    """
    key = (openmetrics, nlines, tuple(sample_pos), roles, tuple(must_be_one),
           tuple(not_nan), tuple(not_negative))
    shape = _SHAPES.get(key)
    if shape is None:
        shape = _Shape(nlines, sample_pos, _Layout(roles), openmetrics,
                       must_be_one, not_nan, not_negative)
        if len(_SHAPES) < MAX_SHARED_SHAPES:
            _SHAPES[key] = shape
    return shape


def _key_text(heads: Iterable[str], others: Iterable[str]) -> str:
    """The non-value text of a payload: series texts, then the other lines."""
    # Lines hold no "\n", and a shape fixes how many there are of each, so
    # equal texts mean equal lines.
    return "\n".join([*heads, *others])


class _Plan:
    """A target's last fully parsed payload, kept small (docs/benchmarks-parse.md).

    A payload whose lines equal it everywhere except in the sample values is
    parsed by slicing: comparisons and conversions are single C-level calls
    over all lines (hot path, measured; see the module docstring). The lines
    themselves are not kept: only the shared `_Shape`, the target's GPUs, and
    the length and hash of the non-value text (`_key_text`).

    Python's str hash is SipHash-1-3 under a per-process random key (PEP
    456): 64 bits, so two different texts of the same length and structure
    pass for each other once in 2**64 comparisons, and a pusher cannot aim
    for that without the key. And even then what is read is that target's own
    previous structure with the new values: a payload it could have sent.
    """

    __slots__ = ("shape", "gpus", "key_len", "key_hash")

    def __init__(self, shape: _Shape, gpus: _Gpus, lines: Sequence[str],
                 keys: Sequence[str]) -> None:
        self.shape = shape
        self.gpus = gpus
        text = _key_text(keys, shape.other_get(lines))
        self.key_len = len(text)
        self.key_hash = hash(text)

    def values(self, lines: Sequence[str]) -> list[float] | None:
        """The used sample values if `lines` has this shape, else None.

        Every value token is checked as the reference would (it refuses the
        payload over a bad one), but only the used ones are converted.
        """
        shape = self.shape
        parts = list(map(str.rpartition, shape.sample_get(lines), repeat(" ")))
        text = _key_text(map(_HEAD, parts), shape.other_get(lines))
        if len(text) != self.key_len or hash(text) != self.key_hash:
            return None
        tokens = list(map(_TOKEN, parts))
        joined = "".join(tokens)
        if shape.openmetrics:
            if _OM_BAD_VALUE.search(joined):
                return None
        elif "_" in joined:
            return None
        try:
            xs = list(map(float, shape.used_get(tokens)))
            # Values the result does not use are only checked. Decimal-digit
            # tokens, most of them, are integers to both parsers; the rest
            # must float() (measured: a third of converting them all).
            list(map(float, filterfalse(str.isdecimal, shape.unused_get(tokens))))
            if shape.openmetrics:
                if shape.must_be_one is not None and any(
                        x != 1.0 for x in map(float, shape.must_be_one(tokens))):
                    return None
                if shape.not_nan is not None and any(
                        x != x for x in map(float, shape.not_nan(tokens))):
                    return None
                if shape.not_negative is not None and any(
                        x < 0 for x in map(float, shape.not_negative(tokens))):
                    return None
        except ValueError:
            return None
        return xs


class SeriesCache:
    """Per-target parse cache; the caller keeps one per scrape target or pusher.

    Keeps the plan of the target's last payload (`_Plan`: a shared shape, the
    target's GPUs and a hash of its text, about 3 KB for an 8-GPU host), or,
    while the target's payloads cannot be planned (timestamps, odd lines),
    maps each sample line's series text to its Entry and remembers validated
    comment lines, up to `max_entries`. The map is dropped once a plan
    stands for it: it held every line's text, ~170 KB per 8-GPU target,
    where 30,000 targets must fit in a few hundred MB (docs/benchmarks-
    scrape.md); a planned target whose structure changes parses its next
    payload from scratch. `len()` is the size of that map. Not
    thread-safe; one target's payloads are parsed one at a time.
    """

    def __init__(self, *, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, mn.Entry] = {}
        self._others: dict[str, int] = {}
        self._plan: _Plan | None = None
        self._key: tuple[bool, int] | None = None
        # The last `PayloadParser.from_entries` payload's entries, GPUs and
        # shape (held, so that the shared shapes, weak values, keep it).
        self._held: tuple[list[mn.Entry], _Gpus, _Shape] | None = None

    def __len__(self) -> int:
        return len(self._entries) + len(self._others)

    def clear(self) -> None:
        self._entries.clear()
        self._others.clear()
        self._plan = None

    def _use(self, openmetrics: bool, max_label_len: int) -> None:
        # Entries embed the label limit, and comment validity differs by
        # format: a target that changes either starts afresh.
        key = (openmetrics, max_label_len)
        if key != self._key:
            self.clear()
            self._key = key

    def _planned(self, plan: _Plan) -> None:
        self._plan = plan
        self._entries = {}
        self._others = {}

    def _trim(self, keys: Iterable[str], lines: Iterable[str]) -> None:
        self._plan = None
        if len(self) <= self.max_entries:
            return
        entries, others = self._entries, self._others
        self._entries = {k: entries[k] for k in keys if k in entries}
        self._others = {line: _OTHER for line in lines if line in others}
        if len(self) > self.max_entries:
            self._entries.clear()
            self._others.clear()


def _unescape(value: str) -> str:
    if "\\" in value:
        return _ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], value)
    return value


def _parse_series(key: str) -> tuple[str, dict[str, str]] | None:
    """Name and labels of a canonical series text; None if the reference must decide.

    Hand-written because the reference costs ~60 us per line and this runs for
    every new series of a target (cold cache); tests/test_parse_differential.py
    holds it to the reference.
    """
    brace = key.find("{")
    if brace < 0:
        return key, {}
    pairs = _LABEL_PAIR.findall(key, brace + 1, len(key) - 1)
    labels = dict(pairs)
    if len(labels) != len(pairs):
        return None  # a repeated label name: the reference raises
    if "\\" in key:
        labels = {name: _unescape(value) for name, value in labels.items()}
    return key[:brace], labels


def _reference_samples(text: str, openmetrics: bool) -> list:
    try:
        families = list((_om_families if openmetrics else _text_families)(text))
    except Exception as exc:  # the reference raises ValueError, and worse on some garbage
        raise ParseError(R_UNPARSABLE, _describe(exc)) from exc
    return [(f.type, f.name, s) for f in families for s in f.samples]


def _describe(exc: BaseException) -> str:
    detail = str(exc) or type(exc).__name__
    return detail if len(detail) <= 200 else detail[:200] + "..."


def _decode(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(R_UNPARSABLE, f"not UTF-8 at byte {exc.start}") from exc


def _is_openmetrics(content_type: str | None, text: str) -> bool:
    if content_type:
        return content_type.split(";", 1)[0].strip().lower() == OPENMETRICS_TYPE
    # A push without a content type: OpenMetrics must end with "# EOF".
    return text.endswith(("# EOF\n", "# EOF"))


class PayloadParser:
    """Parses payloads with the fast path; `parse_reference` is the reference."""

    def __init__(self, *, max_series: int = DEFAULT_MAX_SERIES,
                 max_label_len: int = DEFAULT_MAX_LABEL_LEN) -> None:
        self.max_series = max_series
        self.max_label_len = max_label_len

    def parse(self, body: bytes | str, *, content_type: str | None = None,
              cache: SeriesCache | None = None) -> ParsedPayload:
        """Parse one payload; raises ParseError when it cannot be accepted."""
        text = _decode(body)
        openmetrics = _is_openmetrics(content_type, text)
        if cache is None:
            cache = SeriesCache()
        cache._use(openmetrics, self.max_label_len)
        lines = text.split("\n")
        plan = cache._plan
        if plan is not None and plan.shape.nlines == len(lines):
            xs = plan.values(lines)
            if xs is not None:
                layout = plan.shape.layout
                self._check_count(layout.nseries)
                return layout.assemble(xs, plan.gpus, "warm")
        if openmetrics:
            return self._parse_openmetrics(text, lines, cache)
        return self._parse_text(lines, cache)

    def parse_reference(self, body: bytes | str, *,
                        content_type: str | None = None) -> ParsedPayload:
        """Parse with prometheus_client only; the fast path must equal this."""
        text = _decode(body)
        openmetrics = _is_openmetrics(content_type, text)
        samples = _reference_samples(text, openmetrics)
        self._check_count(len(samples))
        limit = self.max_label_len
        entries = [mn.classify(s.name, s.labels, max_label_len=limit) for _, _, s in samples]
        xs = [_to_float(s.value) for _, _, s in samples]
        gpus, roles = _split(entries)
        layout = _Layout(roles)
        return layout.assemble(layout.value_get(xs), gpus, "reference")

    def from_entries(self, entries: Sequence[mn.Entry], xs: Sequence[float], *, path: str,
                     cache: SeriesCache | None = None) -> ParsedPayload:
        """The ParsedPayload of series already classified (`mn.classify`), with their values.

        For producers that are not text (collector/remote_write.py): the same
        rows, identities, validation and limits as a parsed payload whose
        samples are these, in this order. The layout is shared by payloads of
        one structure as the text paths share theirs; ``cache`` (one per
        producer) holds it between payloads.
        """
        self._check_count(len(entries))
        held = cache._held if cache is not None else None
        # The usual case, a producer sending the series it sent last time: the
        # same Entry objects in the same order, one C-level comparison.
        if held is not None and held[0] == entries:
            _, gpus, shape = held
        else:
            gpus, roles = _split(entries)
            shape = _shape(len(roles), range(len(roles)), roles, False)
            if cache is not None:
                cache._held = (entries, gpus, shape)
        layout = shape.layout
        return layout.assemble(layout.value_get(xs), gpus, path)

    def _check_count(self, count: int) -> None:
        if count > self.max_series:
            raise ParseError(R_TOO_MANY_SERIES, f"more than {self.max_series} series")

    def _parse_text(self, lines: list[str], cache: SeriesCache) -> ParsedPayload:
        """Line by line through the series cache (Prometheus' scrapeCache)."""
        entries_get = cache._entries.get
        others_get = cache._others.get
        entries: list[mn.Entry] = []
        xs: list[float] = []
        sample_pos: list[int] = []
        keys: list[str] = []
        plannable = True
        limit = self.max_series
        for i, line in enumerate(lines):
            key, _, token = line.rpartition(" ")
            entry = entries_get(key)
            if entry is not None and "_" not in token:
                try:
                    x = float(token)
                except ValueError:
                    pass
                else:
                    entries.append(entry)
                    xs.append(x)
                    sample_pos.append(i)
                    keys.append(key)
                    if len(entries) > limit:
                        self._check_count(len(entries))
                    continue
            if others_get(line) is not None:
                continue
            parsed = self._text_line(line, key, token, cache)
            if parsed is None:
                continue
            entry, x, cached = parsed
            entries.append(entry)
            xs.append(x)
            sample_pos.append(i)
            keys.append(key)
            plannable = plannable and cached
            if len(entries) > limit:
                self._check_count(len(entries))
        gpus, roles = _split(entries)
        if plannable:
            plan = _Plan(_shape(len(lines), sample_pos, roles, False), gpus, lines, keys)
            cache._planned(plan)
            layout = plan.shape.layout
        else:
            cache._trim(keys, lines)
            layout = _Layout(roles)
        return layout.assemble(layout.value_get(xs), gpus, "cold")

    def _text_line(self, line: str, key: str, token: str,
                   cache: SeriesCache) -> tuple[mn.Entry, float, bool] | None:
        """A line the cache does not know: (entry, value, cached) or None if not a sample."""
        stripped = line.strip()
        if not stripped or stripped[0] == "#":
            # The text format has no cross-line rules, so a comment line valid
            # once is valid in every payload of the target.
            if stripped and not (stripped == line and _PLAIN_COMMENT.fullmatch(line)):
                _reference_samples(line, False)  # raises ParseError if invalid
            cache._others[line] = _OTHER
            return None
        if key and "_" not in token and _CANONICAL_SERIES.fullmatch(key):
            try:
                x = float(token)
            except ValueError:
                pass
            else:
                parsed = _parse_series(key)
                if parsed is not None:
                    entry = mn.classify(*parsed, max_label_len=self.max_label_len)
                    cache._entries[key] = entry
                    return entry, x, True
        samples = _reference_samples(line, False)
        if len(samples) != 1:
            raise ParseError(R_UNPARSABLE, f"not one sample: {line[:200]!r}")
        _, _, sample = samples[0]
        entry = mn.classify(sample.name, sample.labels, max_label_len=self.max_label_len)
        return entry, _to_float(sample.value), False

    def _parse_openmetrics(self, text: str, lines: list[str],
                           cache: SeriesCache) -> ParsedPayload:
        """A new OpenMetrics shape: the reference validates it, then it is planned."""
        samples = _reference_samples(text, True)
        self._check_count(len(samples))
        limit = self.max_label_len
        entries = [mn.classify(s.name, s.labels, max_label_len=limit) for _, _, s in samples]
        xs = [_to_float(s.value) for _, _, s in samples]
        gpus, roles = _split(entries)
        plan = self._plan_openmetrics(lines, samples, roles, gpus)
        if plan is not None:
            cache._planned(plan)
            layout = plan.shape.layout
        else:
            cache._plan = None
            layout = _Layout(roles)
        return layout.assemble(layout.value_get(xs), gpus, "cold")

    def _plan_openmetrics(self, lines: list[str], samples: list,
                          roles: tuple[_Role, ...], gpus: _Gpus) -> _Plan | None:
        sample_pos: list[int] = []
        keys: list[str] = []
        for i, line in enumerate(lines):
            if not line or line[0] == "#":
                continue
            key, _, token = line.rpartition(" ")
            if not _CANONICAL_SERIES.fullmatch(key) or _OM_BAD_VALUE.search(token):
                return None  # timestamps, exemplars, odd text: always the reference
            sample_pos.append(i)
            keys.append(key)
        if len(sample_pos) != len(samples):
            return None  # the reference dropped a repeated series
        must_be_one: list[int] = []
        not_nan: list[int] = []
        not_negative: list[int] = []
        for j, (typ, family, sample) in enumerate(samples):
            if typ in _OM_UNPLANNED_TYPES:
                return None
            if typ == "info":
                must_be_one.append(j)
            suffix = sample.name[len(family):]
            if suffix in _OM_NOT_NAN:
                not_nan.append(j)
            if suffix in _OM_NOT_NEGATIVE:
                not_negative.append(j)
        shape = _shape(len(lines), sample_pos, roles, True, must_be_one, not_nan, not_negative)
        return _Plan(shape, gpus, lines, keys)


def parse_reference(body: bytes | str, *, content_type: str | None = None,
                    max_series: int = DEFAULT_MAX_SERIES,
                    max_label_len: int = DEFAULT_MAX_LABEL_LEN) -> ParsedPayload:
    """Parse with prometheus_client's parsers only (the reference)."""
    parser = PayloadParser(max_series=max_series, max_label_len=max_label_len)
    return parser.parse_reference(body, content_type=content_type)
