"""/nodes : every node and every GPU, paged, sorted and filtered on the server."""

from __future__ import annotations

import dash
from dash import Input, Output, callback, dcc, html, no_update

from dashboard import format as fmt
from dashboard.app import service
from dashboard.grids import NUMBER, TEXT_FILTER, column, grid, time_column
from dashboard.service import GPUS, NODES
from dashboard.tables import BadParameter, grid_query, select

# Uptime and reputation are computed per node shown (Service.node_scores,
# the node page's own values), not for the whole fleet: they cannot be a
# server-side sort or filter over 100,000 rows.
PER_NODE = {"sortable": False, "headerTooltip": "as on the node's page; computed for the nodes shown"}


def node_columns(tables) -> list[dict]:
    rows = tables.nodes
    i = NODES.index
    # The columns a visitor ranks nodes by first; on a narrow screen the grid scrolls sideways to the rest.
    return [
        column("node_id", "Node", [r[i("node_id")] for r in rows], **NUMBER),
        column("name", "Name", [r[i("name")] for r in rows], lo=100, hi=320, cellRenderer="markdown",
               **TEXT_FILTER),
        column("status", "State", ["down", "late"], **TEXT_FILTER, cellClass="state"),
        column("reputation", "Reputation", ["100.00"], **NUMBER, **PER_NODE),
        column("uptime_24h", "Uptime 24\u00a0h", ["100.00 %"], **NUMBER, **PER_NODE),
        column("uptime_7d", "Uptime 7\u00a0d", ["100.00 %"], **NUMBER, **PER_NODE),
        time_column("last_ok", "Last seen (UTC)"),
        column("gpus", "GPUs", [r[i("gpus")] for r in rows], **NUMBER),
        column("gpus_online", "Online", [r[i("gpus_online")] for r in rows], **NUMBER),
        column("gpus_hired", "Hired", [r[i("gpus_hired")] for r in rows], **NUMBER),
        column("flagged", "Flagged", [r[i("flagged")] for r in rows], **NUMBER),
        column("models", "Models", [r[i("models")] for r in rows], lo=120, flex=1, tooltipField="models",
               **TEXT_FILTER),
        column("operator", "Operator", [r[i("operator")] for r in rows], lo=90, hi=240, **TEXT_FILTER),
    ]


def gpu_columns(tables) -> list[dict]:
    rows = tables.gpus
    i = GPUS.index
    return [
        column("gpu_uuid", "GPU UUID", [r[i("gpu_uuid")] for r in rows], lo=120, **TEXT_FILTER),
        column("node_name", "Node", [r[i("node_name")] for r in rows], lo=100, hi=320, cellRenderer="markdown",
               **TEXT_FILTER),
        column("gpu_index", "#", [r[i("gpu_index")] for r in rows], **NUMBER),
        column("model", "Model", [r[i("model")] for r in rows], lo=140, flex=1, **TEXT_FILTER),
        column("memory_gib", "Memory (GiB)", [r[i("memory_gib")] for r in rows], **NUMBER),
        column("state", "State", ["hired_offline"], **TEXT_FILTER, cellClass="state"),
        column("verification", "Verification", ["unverified"], **TEXT_FILTER, cellClass="state"),
        column("shared", "UUID shared", ["false"]),
    ]


# Column widths come from every row's text (60 ms at 100,000 GPUs): once per
# tick and process, not per visit.
_columns: dict = {}


def _columns_of(tables) -> tuple[list[dict], list[dict]]:
    key = (id(tables), tables.as_of)  # the tick's one Tables object of this process
    cached = _columns.get(key)
    if cached is None:
        cached = (node_columns(tables), gpu_columns(tables))
        _columns.clear()
        _columns[key] = cached
    return cached


def layout(**_kwargs):
    tables = service().tables()
    nodes, gpus = _columns_of(tables)
    return html.Div([
        html.H1("Nodes and GPUs"),
        html.Div([
            f"As of {fmt.when(tables.as_of)} · {len(tables.nodes):,} nodes · {len(tables.gpus):,} GPU claims "
            "(a UUID claimed by several nodes is one row per claim, marked shared, and one GPU in the counts). "
            "Sort by a column header; filter with the boxes under them. Download: ",
            html.A("nodes CSV", href="/api/v1/nodes?format=csv&limit=1000"), " · ",
            html.A("GPUs CSV", href="/api/v1/gpus?format=csv&limit=1000"), " · ",
            html.A("nodes JSON", href="/api/v1/nodes"), " · ", html.A("GPUs JSON", href="/api/v1/gpus"),
        ], className="asof"),
        html.Div(id="nodes-error", className="bad"),
        dcc.Tabs([
            dcc.Tab(_grid("nodes-grid", nodes), label="Nodes", value="nodes"),
            dcc.Tab(_grid("gpus-grid", gpus), label="GPUs", value="gpus"),
        ], value="nodes", id="nodes-tabs", mobile_breakpoint=0),
    ])


def _grid(grid_id: str, columns):
    return grid(grid_id, columns, infinite=True, default_col={"floatingFilter": True})


def _rows(spec, request, rows_name: str, text_name: str):
    ex = service()
    tables = ex.tables()
    query = grid_query(spec, request)
    rows = select(spec, getattr(tables, rows_name), getattr(tables, text_name), query, tables.orders[spec.name])
    page = [dict(zip(spec.columns, row)) for row in rows[query.offset:query.offset + query.limit]]
    scores = ex.node_scores([item["node_id"] for item in page], as_of=tables.as_of) if spec is NODES else {}
    out = []
    for item in page:
        node_id = item["node_id"]
        if spec is NODES:
            item["last_ok"] = fmt.when(item["last_ok"], zone=False)
            item["name"] = f"[{fmt.markdown_text(item['name'])}](/nodes/{node_id})"
            s = scores[node_id]
            item["uptime_24h"] = fmt.percent(s["uptime_24h"])
            item["uptime_7d"] = fmt.percent(s["uptime_7d"])
            item["reputation"] = "no data" if s["reputation"] is None else f"{s['reputation']:.2f}"
        else:
            item["node_name"] = f"[{fmt.markdown_text(item['node_name'])}](/nodes/{node_id})"
            item["shared"] = "shared" if item["shared"] else ""
        item.pop("registered_at", None)
        out.append(item)
    return {"rowData": out, "rowCount": len(rows)}


@callback(Output("nodes-grid", "getRowsResponse"), Output("nodes-error", "children", allow_duplicate=True),
          Input("nodes-grid", "getRowsRequest"), prevent_initial_call=True)
def node_rows(request):
    if not request:
        return no_update, no_update
    try:
        return _rows(NODES, request, "nodes", "node_text"), ""
    except BadParameter as err:
        return {"rowData": [], "rowCount": 0}, str(err)


@callback(Output("gpus-grid", "getRowsResponse"), Output("nodes-error", "children", allow_duplicate=True),
          Input("gpus-grid", "getRowsRequest"), prevent_initial_call=True)
def gpu_rows(request):
    if not request:
        return no_update, no_update
    try:
        return _rows(GPUS, request, "gpus", "gpu_text"), ""
    except BadParameter as err:
        return {"rowData": [], "rowCount": 0}, str(err)


dash.register_page(__name__, path="/nodes", name="Nodes & GPUs", title="fleetscope · nodes and GPUs", layout=layout)
