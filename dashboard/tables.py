"""Server-side paging, sorting and filtering of the explorer's tables.

The node and GPU tables of a tick are computed once (fleetscope/explorer.py)
and kept in memory as tuples; a page is filtered, sorted and sliced here, so
neither visitors' parameters nor their number ever reach SQL. The same
``TableQuery`` serves the JSON API (query string) and the grid (dash-ag-grid's
infinite row model): one parser, one validation, one set of reasons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleetscope import numbers
from fleetscope.times import format_time

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_SEARCH = 200


class BadParameter(ValueError):
    """A paging, sorting or filter parameter that cannot be used; the message is the reason."""


@dataclass(frozen=True)
class TableSpec:
    """A table's columns, which of them filter by exact value, and its default order."""

    name: str
    columns: tuple[str, ...]
    search: tuple[str, ...]                       # columns the free-text search looks in
    exact: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> allowed values
    default_sort: str = ""

    def index(self, column: str) -> int:
        return self.columns.index(column)


@dataclass(frozen=True)
class TableQuery:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: str = ""
    descending: bool = False
    search: str = ""
    exact: tuple[tuple[str, frozenset[str]], ...] = ()
    contains: tuple[tuple[str, str], ...] = ()     # per-column text filters (the grid's)


def _int(params: Mapping[str, str], name: str, default: int, *, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    value = numbers.parse_int(raw, lo=lo, hi=hi)
    if isinstance(value, numbers.Problem):
        raise BadParameter(f"{name} must be an integer, got {raw[:40]!r}" if value.not_a_number
                           else f"{name} must be between {lo} and {hi}, got {value.value}")
    return value


def parse_query(spec: TableSpec, params: Mapping[str, str], *, extra: Sequence[str] = ()) -> TableQuery:
    """A validated query from URL parameters: limit, offset, sort, order, q and the spec's exact filters.

    Unknown parameters are refused (a typo would otherwise silently show
    everything).
    """
    allowed = {"limit", "offset", "sort", "order", "q", "format", *spec.exact, *extra}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadParameter(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    limit = _int(params, "limit", DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT)
    offset = _int(params, "offset", 0, lo=0, hi=10**9)
    sort = params.get("sort") or spec.default_sort
    if sort not in spec.columns:
        raise BadParameter(f"sort must be one of {', '.join(spec.columns)}, got {sort[:40]!r}")
    order = params.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise BadParameter(f"order must be asc or desc, got {order[:40]!r}")
    search = params.get("q") or ""
    if len(search) > MAX_SEARCH:
        raise BadParameter(f"q is longer than {MAX_SEARCH} characters")
    exact = []
    for column, values in spec.exact.items():
        raw = params.get(column)
        if not raw:
            continue
        wanted = frozenset(v.strip() for v in raw.split(","))
        bad = sorted(wanted - set(values))
        if bad:
            raise BadParameter(f"{column} must be among {', '.join(values)}, got {bad[0][:40]!r}")
        exact.append((column, wanted))
    return TableQuery(limit=limit, offset=offset, sort=sort, descending=order == "desc", search=search.lower(),
                      exact=tuple(exact))


def grid_query(spec: TableSpec, request: Mapping[str, Any], *, search: str = "",
               exact: Mapping[str, Sequence[str]] | None = None) -> TableQuery:
    """A validated query from dash-ag-grid's getRowsRequest (startRow, endRow, sortModel, filterModel)."""
    try:
        start = int(request.get("startRow") or 0)
        end = int(request.get("endRow") or start + DEFAULT_LIMIT)
    except (TypeError, ValueError):
        raise BadParameter("startRow and endRow must be integers") from None
    if start < 0 or not 0 < end - start <= MAX_LIMIT:
        raise BadParameter(f"a grid block must hold 1 to {MAX_LIMIT} rows")
    sort, descending = spec.default_sort, False
    for item in request.get("sortModel") or []:
        if item.get("colId") in spec.columns:
            sort, descending = item["colId"], item.get("sort") == "desc"
            break
    contains = []
    for column, model in (request.get("filterModel") or {}).items():
        if column in spec.columns and isinstance(model, dict) and model.get("filter") not in (None, ""):
            text = str(model["filter"])[:MAX_SEARCH].lower()
            contains.append((column, text))
    exact_filters = []
    for column, values in (exact or {}).items():
        if values:
            bad = sorted(set(values) - set(spec.exact.get(column, ())))
            if bad:
                raise BadParameter(f"{column} must be among {', '.join(spec.exact.get(column, ()))}")
            exact_filters.append((column, frozenset(values)))
    if len(search) > MAX_SEARCH:
        raise BadParameter(f"the search is longer than {MAX_SEARCH} characters")
    return TableQuery(limit=end - start, offset=start, sort=sort, descending=descending, search=search.lower(),
                      exact=tuple(exact_filters), contains=tuple(contains))


def select(spec: TableSpec, rows: Sequence[tuple], texts: Sequence[str], query: TableQuery,
           orders: dict | None = None) -> list[tuple]:
    """The rows matching ``query``'s filters, in its order (not yet sliced).

    ``orders`` keeps each (column, direction) order of the whole table once
    computed: the tables change once per tick, so a page after the first is
    a filter over a presorted index, not a sort of 100,000 rows.
    """
    picked = _order(spec, rows, query.sort, query.descending, orders)
    for column, wanted in query.exact:
        i = spec.index(column)
        picked = [k for k in picked if _text(rows[k][i]) in wanted]
    if query.search:
        needle = query.search
        picked = [k for k in picked if needle in texts[k]]
    for column, text in query.contains:
        i = spec.index(column)
        picked = [k for k in picked if text in _text(rows[k][i]).lower()]
    return [rows[k] for k in picked]


def _order(spec: TableSpec, rows: Sequence[tuple], column: str, descending: bool, orders: dict | None) -> list[int]:
    key = (column, descending)
    if orders is not None and key in orders:
        return orders[key]
    i = spec.index(column)
    # None sorts last either way; values of one column share a type.
    present = [k for k in range(len(rows)) if rows[k][i] is not None]
    missing = [k for k in range(len(rows)) if rows[k][i] is None]
    present.sort(key=lambda k: rows[k][i], reverse=descending)
    order = present + missing
    if orders is not None:
        orders[key] = order
    return order


def haystacks(spec: TableSpec, rows: Sequence[tuple]) -> list[str]:
    """Per row, the lower-cased text the free-text search looks in; built once per table per tick."""
    columns = [spec.index(c) for c in spec.search]
    return ["\x00".join([_text(row[i]) for i in columns]).lower() for row in rows]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def as_json(spec: TableSpec, row: tuple) -> dict[str, Any]:
    """One row as a JSON object (times in ISO 8601 UTC)."""
    return {c: format_time(v) if isinstance(v, datetime) else v for c, v in zip(spec.columns, row)}
