"""How the explorer's grids (dash-ag-grid) look: human headers, columns as wide as their content, page sizes.

Issue 16: grids truncated model names, dates and evidence ("2026-12-…"),
showed raw field names as headers and left a large empty area under them.
Every grid is built here, so they all read the same way:

- a column's width comes from its content: the longest text it will show
  (known on the server: the tick's tables) at the grid's font, within bounds,
  so a model name or a date is never cut; wide free text (evidence, reasons)
  takes the remaining width (flex) and shows its full value on click;
- headers are words ("First seen"), never field names;
- the grid is as tall as its rows (``domLayout: autoHeight``) and scrolls
  sideways inside its own box on a narrow screen;
- the pager offers PAGE_SIZES, the default among them (a page size missing
  from the list shows an empty "Page Size" box).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dash_ag_grid as dag

PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 50
# The grids' cell text is 13 px (style.css), where digits and most letters
# run about 7.1 px; a cell has 12 px of padding on each side. Headers are
# bold and leave room for the sort arrow; they wrap (wrapHeaderText), so a
# column needs only its longest header word, and "Uptime 24\u00a0h" keeps
# its number and unit together.
CHAR_PX = 7.1
HEADER_CHAR_PX = 7.6
CELL_PADDING_PX = 26
HEADER_PADDING_PX = 30
MAX_COLUMN_PX = 520
TEXT_FILTER = {"filter": "agTextColumnFilter",
               "filterParams": {"filterOptions": ["contains"], "maxNumConditions": 1}}
NUMBER = {"type": "rightAligned"}
# Free text (reasons, evidence) wraps onto as many lines as it needs instead of ending in "…".
WRAP = {"wrapText": True, "autoHeight": True, "cellClass": "wrap"}


def fit(texts: Iterable[Any], header: str, *, lo: int = 60, hi: int = MAX_COLUMN_PX) -> int:
    """The width in px that shows the longest of ``texts`` and the header's longest word whole, within [lo, hi]."""
    longest = max((len(str(t)) for t in texts if t is not None), default=0)
    word = max(len(w) for w in header.split(" "))
    return int(min(hi, max(lo, longest * CHAR_PX + CELL_PADDING_PX, word * HEADER_CHAR_PX + HEADER_PADDING_PX)))


def column(field: str, header: str, texts: Iterable[Any] = (), *, lo: int = 60, hi: int = MAX_COLUMN_PX,
           **options) -> dict[str, Any]:
    """A column with a human header, at least as wide as its content (and growing with spare room if flex)."""
    width = fit(texts, header, lo=lo, hi=hi)
    spec = {"field": field, "headerName": header, "minWidth": width, "headerTooltip": header}
    if "flex" not in options:
        spec["width"] = width
    spec.update(options)
    return spec


def time_column(field: str, header: str, **options) -> dict[str, Any]:
    """A column of times as grids print them (format.when(..., zone=False)): every one is as long as this."""
    return column(field, header, ["2026-12-03 15:10:56"], **options)


def grid(grid_id: str, columns: list[dict[str, Any]], *, rows: list[dict[str, Any]] | None = None,
         infinite: bool = False, page_size: int = DEFAULT_PAGE_SIZE, grid_options: dict | None = None,
         default_col: dict | None = None, **kwargs) -> dag.AgGrid:
    """A paged grid as tall as its page, with a working page-size selector; ``infinite``: rows from the server."""
    if page_size not in PAGE_SIZES:
        raise ValueError(f"page size {page_size} must be one of {PAGE_SIZES}")
    options = {"pagination": True, "paginationPageSize": page_size, "paginationPageSizeSelector": list(PAGE_SIZES),
               "domLayout": "autoHeight", "tooltipShowDelay": 300, "enableCellTextSelection": True,
               "suppressCellFocus": False}
    if infinite:
        # Blocks of the default page: a larger page is two or four requests,
        # and a block never asks the server for more rows than are shown.
        options.update({"cacheBlockSize": page_size, "maxBlocksInCache": 10, "rowBuffer": 0,
                        "infiniteInitialRowCount": page_size})
    options.update(grid_options or {})
    extra = {"rowModelType": "infinite"} if infinite else {"rowData": rows or []}
    return dag.AgGrid(id=grid_id, columnDefs=columns, className="ag-theme-alpine grid",
                      defaultColDef={"sortable": True, "resizable": True, "suppressHeaderMenuButton": True,
                                     "wrapHeaderText": True, "autoHeaderHeight": True,
                                     **(default_col or {})},
                      dashGridOptions=options, style={"width": "100%"}, **extra, **kwargs)
