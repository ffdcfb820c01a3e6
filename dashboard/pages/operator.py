"""/operator : an operator's own nodes, states, uptime, channels and alert history (operator token required).

The token is typed into the page and travels only in the callback's POST
body, never in a URL (where logs and browser history would keep it); it is
held in the page's memory, not in storage, and nothing here is cached across
visitors. A wrong token reads nothing.
"""

from __future__ import annotations

import dash
import dash_ag_grid as dag
from dash import Input, Output, State, callback, dcc, html, no_update

from fleetscope.operators import operator_view
from fleetscope.registry import operator_for_token
from fleetscope.snapshot import SNAPSHOT_TICK_S

from dashboard import format as fmt
from dashboard.app import explorer

MAX_TOKEN = 200


def layout(**_kwargs):
    return html.Div([
        html.H1("Operator view"),
        html.P("Your nodes, their states and uptime, your alert channels and the alerts sent. Paste the operator "
               "token you got from 'fleetscope operator create'; it is sent to this server only, never stored.",
               className="note"),
        html.Div([
            dcc.Input(id="operator-token", type="password", placeholder="operator token", debounce=True,
                      autoComplete="off", maxLength=MAX_TOKEN, className="token"),
            html.Button("Show my nodes", id="operator-submit", n_clicks=0, className="button"),
        ], className="token-row"),
        dcc.Store(id="operator-token-store", storage_type="memory"),
        dcc.Interval(id="operator-refresh", interval=SNAPSHOT_TICK_S * 1000, disabled=True),
        html.Div(id="operator-body"),
    ])


@callback(Output("operator-token-store", "data"), Output("operator-refresh", "disabled"),
          Input("operator-submit", "n_clicks"), Input("operator-token", "n_submit"), State("operator-token", "value"),
          prevent_initial_call=True)
def remember(_clicks, _submit, token):
    token = (token or "").strip()
    return (token or None), not token


@callback(Output("operator-body", "children"), Input("operator-token-store", "data"),
          Input("operator-refresh", "n_intervals"), prevent_initial_call=True)
def show(token, _n):
    if not token:
        return no_update
    ex = explorer()
    at = ex.tick()
    with ex.pool().connection() as conn:
        operator_id = operator_for_token(conn, token[:MAX_TOKEN])
        view = operator_view(conn, operator_id, at=at) if operator_id is not None else None
    if view is None:
        return html.P("That token is not an operator's token.", id="operator-error", className="bad")
    nodes = [dict(n, uptime_24h=fmt.percent(n["uptime_24h"]), uptime_7d=fmt.percent(n["uptime_7d"]),
                  last_ok_at=fmt.when(n["last_ok_at"]), link=f"[{fmt.markdown_text(n['name'])}](/nodes/{n['node_id']})")
             for n in view["nodes"]]
    return html.Div([
        html.H2(f"{view['operator']}: {len(nodes)} node{'' if len(nodes) == 1 else 's'}, "
                f"as of {fmt.when(view['as_of'])}", id="operator-name"),
        dag.AgGrid(id="operator-nodes", rowData=nodes, className="ag-theme-alpine",
                   columnDefs=[{"field": "link", "headerName": "node", "cellRenderer": "markdown", "flex": 2},
                               {"field": "state", "width": 100}, {"field": "online", "width": 90},
                               {"field": "last_ok_at", "headerName": "last seen", "flex": 2},
                               {"field": "uptime_24h", "headerName": "uptime 24 h", "flex": 1},
                               {"field": "uptime_7d", "headerName": "uptime 7 d", "flex": 1},
                               {"field": "alert_status", "headerName": "alert state", "width": 110},
                               {"field": "paused", "width": 90}],
                   defaultColDef={"sortable": True, "resizable": True},
                   dashGridOptions={"domLayout": "autoHeight", "pagination": True, "paginationPageSize": 50}),
        html.H2(f"Alert channels ({len(view['channels'])})"),
        html.Ul([html.Li(f"{c['kind']}: {c['target']}") for c in view["channels"]] or [html.Li("None yet.")],
                id="operator-channels"),
        html.H2(f"Alerts sent (latest {len(view['alerts'])})"),
        dag.AgGrid(id="operator-alerts", rowData=view["alerts"], className="ag-theme-alpine",
                   columnDefs=[{"field": "attempted_at", "flex": 2}, {"field": "name", "headerName": "node", "flex": 1},
                               {"field": "event", "width": 110}, {"field": "kind", "width": 100},
                               {"field": "attempt", "width": 90}, {"field": "ok", "width": 70},
                               {"field": "error", "flex": 2}],
                   dashGridOptions={"domLayout": "autoHeight"}),
    ])


dash.register_page(__name__, path="/operator", name="Operator", title="fleetscope · operator view", layout=layout)
