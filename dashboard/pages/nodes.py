"""/nodes : every node and every GPU, paged, sorted and filtered on the server."""

from __future__ import annotations

import dash
import dash_ag_grid as dag
from dash import Input, Output, callback, dcc, html, no_update

from dashboard.app import explorer
from dashboard.format import markdown_text, when
from dashboard.service import GPUS, NODES
from dashboard.tables import BadParameter, grid_query, select


PAGE_SIZE = 50
TEXT = {"filter": "agTextColumnFilter", "filterParams": {"filterOptions": ["contains"], "maxNumConditions": 1}}
NUMBER = {"type": "rightAligned"}
NODE_COLUMNS = [
    {"field": "node_id", "headerName": "node", "width": 90, **NUMBER},
    {"field": "name", "headerName": "name", "cellRenderer": "markdown", **TEXT, "flex": 2},
    {"field": "operator", **TEXT, "flex": 1, "minWidth": 120},
    {"field": "status", "headerName": "state", **TEXT, "width": 110, "cellClass": "state"},
    {"field": "gpus", "headerName": "GPUs", "width": 90, **NUMBER},
    {"field": "gpus_online", "headerName": "online", "width": 90, **NUMBER},
    {"field": "gpus_hired", "headerName": "hired", "width": 90, **NUMBER},
    {"field": "models", "headerName": "models", **TEXT, "flex": 2},
    {"field": "flagged", "headerName": "flagged", "width": 95, **NUMBER},
    {"field": "last_ok", "headerName": "last seen (UTC)", "flex": 2, "minWidth": 190},
]
GPU_COLUMNS = [
    {"field": "gpu_uuid", "headerName": "GPU UUID", **TEXT, "flex": 3},
    {"field": "node_name", "headerName": "node", "cellRenderer": "markdown", **TEXT, "flex": 2},
    {"field": "gpu_index", "headerName": "#", "width": 60, **NUMBER},
    {"field": "model", **TEXT, "flex": 2},
    {"field": "memory_gib", "headerName": "memory (GiB)", "width": 120, **NUMBER},
    {"field": "state", **TEXT, "width": 130, "cellClass": "state"},
    {"field": "verification", **TEXT, "width": 130, "cellClass": "state"},
    {"field": "shared", "headerName": "UUID shared", "width": 110},
]


def _grid(grid_id: str, columns) -> dag.AgGrid:
    return dag.AgGrid(
        id=grid_id, rowModelType="infinite", columnDefs=columns,
        defaultColDef={"sortable": True, "resizable": True, "floatingFilter": True, "suppressHeaderMenuButton": True},
        dashGridOptions={"pagination": True, "paginationPageSize": PAGE_SIZE, "cacheBlockSize": PAGE_SIZE,
                         "maxBlocksInCache": 10, "rowBuffer": 0, "infiniteInitialRowCount": PAGE_SIZE},
        style={"height": "640px"}, className="ag-theme-alpine")


def layout(**_kwargs):
    tables = explorer().tables()
    return html.Div([
        html.H1("Nodes and GPUs"),
        html.Div([
            f"As of {when(tables.as_of)} · {len(tables.nodes):,} nodes · {len(tables.gpus):,} GPU claims "
            "(a UUID claimed by several nodes is one row per claim, marked shared, and one GPU in the counts). "
            "Sort by a column header; filter with the boxes under them. Download: ",
            html.A("nodes CSV", href="/api/v1/nodes?format=csv&limit=1000"), " · ",
            html.A("GPUs CSV", href="/api/v1/gpus?format=csv&limit=1000"), " · ",
            html.A("nodes JSON", href="/api/v1/nodes"), " · ", html.A("GPUs JSON", href="/api/v1/gpus"),
        ], className="asof"),
        html.Div(id="nodes-error", className="bad"),
        dcc.Tabs([
            dcc.Tab(_grid("nodes-grid", NODE_COLUMNS), label="Nodes", value="nodes"),
            dcc.Tab(_grid("gpus-grid", GPU_COLUMNS), label="GPUs", value="gpus"),
        ], value="nodes", id="nodes-tabs"),
    ])


def _rows(spec, request, rows_name: str, text_name: str):
    tables = explorer().tables()
    query = grid_query(spec, request)
    rows = select(spec, getattr(tables, rows_name), getattr(tables, text_name), query, tables.orders[spec.name])
    page = rows[query.offset:query.offset + query.limit]
    out = []
    for row in page:
        item = dict(zip(spec.columns, row))
        if "last_ok" in item:
            item["last_ok"] = when(item["last_ok"]) if item["last_ok"] else "never"
        node_id = item["node_id"]
        if spec is NODES:
            item["name"] = f"[{markdown_text(item['name'])}](/nodes/{node_id})"
        else:
            item["node_name"] = f"[{markdown_text(item['node_name'])}](/nodes/{node_id})"
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
