"""/operator : an operator's own nodes and alert channels, and the changes an operator makes to them (issue 16).

Signing in: the operator token is typed once and kept in this browser tab's
session storage (``dcc.Store(storage_type="session")``: gone when the tab
closes or on "Sign out", never in a URL, where logs and browser history would
keep it). It travels only in callback POST bodies. Every render checks it
again (``fleetscope.registry.operator_for_token``); a wrong token reads
nothing and writes nothing.

Reading: ``fleetscope.operators.operator_view`` at the current time, not at
the explorer's snapshot tick: the state shown is the alert loop's definition
(``states.node_status`` on the node's latest report) at the moment of the
refresh, so the page says "down" no later than the alert does.

Writing: registering a node, pausing or resuming it, adding, testing and
removing alert channels are calls to the collector's operator API
(fleetscope/collector_client.py) with the signed-in token, so the collector's
validation, SSRF refusal and ownership rules are the only ones, and the
dashboard itself writes nothing to the database. The public pages stay
read-only; only this page, and only with a valid token, asks for a change.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import dash
import dash_ag_grid as dag
import flask
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from fleetscope.collector_client import CollectorClient, CollectorError, collector_url
from fleetscope.operators import operator_view
from fleetscope.registry import operator_for_token

from dashboard import format as fmt
from dashboard.app import service
from dashboard.serve import COLLECTOR_URL_KEY

if TYPE_CHECKING:
    import psycopg

MAX_TOKEN = 200
# The view refreshes this often while signed in: within one default alert
# round (collector/settings.py DEFAULT_ALERT_EVAL_S) of what the alert loop knows.
REFRESH_S = 5
CHANNEL_KINDS = ("webhook", "slack", "discord", "email")
HIDDEN = {"display": "none"}
SHOWN: dict[str, str] = {}


def layout(**_kwargs):
    return html.Div([
        html.H1("Operator view"),
        html.P("Your nodes, their states and uptime, your alert channels and the alerts sent; register nodes, "
               "pause them, and add, test and remove channels. Sign in with the operator token from "
               "'fleetscope operator create'. It is kept in this browser tab until you sign out or close the "
               "tab, sent to this server only, and never put in a URL.", className="note"),
        dcc.Store(id="operator-token-store", storage_type="session"),
        dcc.Store(id="operator-changed", data=0),
        dcc.Interval(id="operator-refresh", interval=REFRESH_S * 1000, disabled=True),
        html.Div([
            dcc.Input(id="operator-token", type="password", placeholder="operator token", debounce=True,
                      autoComplete="off", maxLength=MAX_TOKEN, className="token"),
            html.Button("Sign in", id="operator-submit", n_clicks=0, className="button"),
        ], id="operator-signin", className="token-row"),
        html.Div([
            html.Span(id="operator-signed-in"),
            html.Button("Sign out", id="operator-signout", n_clicks=0, className="button secondary"),
        ], id="operator-session", className="op-session", style=HIDDEN),
        html.Div(id="operator-message", role="status", className="op-message"),
        html.Div([
            html.Div([
                html.H2("Register a node"),
                dcc.Input(id="operator-node-name", placeholder="name, e.g. rig-7", maxLength=200,
                          autoComplete="off", className="op-input"),
                dcc.Input(id="operator-node-scrape-url", placeholder="scrape URL (optional)",
                          maxLength=2000, autoComplete="off", className="op-input wide"),
                html.Button("Register", id="operator-register", n_clicks=0, className="button"),
                html.Span("Leave the scrape URL empty for a node that pushes (fleetscope-exporter --push).",
                          className="note"),
            ], className="op-form"),
            html.Div([
                html.H2("Add an alert channel"),
                dcc.Dropdown(id="operator-channel-kind", options=list(CHANNEL_KINDS), value="webhook",
                             clearable=False, searchable=False, className="op-kind"),
                dcc.Input(id="operator-channel-target", placeholder="https://... or an email address",
                          maxLength=2000, autoComplete="off", className="op-input wide"),
                html.Button("Add channel", id="operator-channel-add", n_clicks=0, className="button"),
            ], className="op-form"),
            html.Div([
                html.H2("Pause alerts for a node"),
                dcc.Dropdown(id="operator-pause-node", placeholder="choose a node", className="op-node"),
                html.Button("Pause", id="operator-pause", n_clicks=0, className="button"),
                html.Button("Resume", id="operator-resume", n_clicks=0, className="button secondary"),
                html.Span("A paused node sends no alerts; its counts, uptime and reputation are unchanged "
                          "(see Methodology).", className="note"),
            ], className="op-form"),
        ], id="operator-actions", className="op-actions", style=HIDDEN),
        html.Div(id="operator-body"),
    ], className="operator-page")


# -- what the callbacks do (plain functions: the tests call them) ------------------------

def signed_in_operator(token: str | None, conn: psycopg.Connection | None = None) -> int | None:
    """The operator whose token this is, or None (a wrong, empty or overlong token); on ``conn`` if given."""
    token = (token or "").strip()
    if not token or len(token) > MAX_TOKEN:
        return None
    if conn is not None:
        return operator_for_token(conn, token)
    with service().pool().connection() as conn:
        return operator_for_token(conn, token)


def client(token: str) -> CollectorClient:
    """The collector's operator API as this token (its URL from ``fleetscope dashboard --collector-url``)."""
    return CollectorClient(collector_url(flask.current_app.config.get(COLLECTOR_URL_KEY)), token)


def view(token: str | None, *, at: datetime | None = None) -> dict[str, Any] | None:
    """The signed-in operator's view at ``at`` (now: the alert loop's own clock), or None for a wrong token."""
    with service().pool().connection() as conn:  # one connection for the token and the view (every 5 s a tab)
        operator_id = signed_in_operator(token, conn)
        if operator_id is None:
            return None
        return operator_view(conn, operator_id, at=at or datetime.now(timezone.utc))


def perform(action: str, token: str | None, *, name: str | None = None, scrape_url: str | None = None,
            kind: str | None = None, target: str | None = None, node_id: int | None = None,
            channel_id: int | None = None) -> tuple[bool, Any, str | None]:
    """Carry out one operator action through the collector; (ok, message, new node token or None)."""
    if signed_in_operator(token) is None:
        return False, "Sign in with a valid operator token first.", None
    api = client(token.strip())
    try:
        if action == "register":
            if not (name or "").strip():
                return False, "Give the node a name.", None
            node = api.register_node(name.strip(), scrape_url=(scrape_url or "").strip() or None)
            return True, f"Node {node['node_id']} '{node['name']}' registered.", node["node_token"]
        if action == "channel-add":
            if not (target or "").strip():
                return False, "Give the channel a target (a URL or an email address).", None
            made = api.add_channel(kind or "webhook", target.strip())
            return True, f"Channel {made['channel_id']} ({made['kind']} {made['target']}) added.", None
        if action in ("pause", "resume"):
            if node_id is None:
                return False, "Choose a node first.", None
            node = api.set_paused(int(node_id), action == "pause")
            return True, f"Node {node['node_id']} '{node['name']}' {'paused' if node['paused'] else 'resumed'}.", None
        if action == "channel-test":
            result = api.test_channel(int(channel_id))
            if result["ok"]:
                return True, f"Test message delivered to channel {channel_id} ({result['target']}).", None
            return False, f"Test message to channel {channel_id} not delivered: {result['error']}", None
        if action == "channel-remove":
            api.remove_channel(int(channel_id))
            return True, f"Channel {channel_id} removed.", None
    except CollectorError as err:
        return False, str(err), None
    raise ValueError(f"unknown operator action {action!r}")


def new_node_box(node_token: str, *, collector: str) -> html.Div:
    """The node token, shown this once, with the command that uses it."""
    return html.Div([
        html.Div("The node's token, shown only this once (the collector keeps only its hash). Copy it now:",
                 className="note"),
        html.Pre(node_token, id="operator-new-node-token", className="op-secret"),
        html.Div(["Start the exporter on the node with ",
                  html.Code(f"fleetscope-exporter --push {collector}/api/v1/push --token {node_token}"),
                  ", or give the scrape URL's exporter nothing: the collector scrapes it."], className="note"),
    ], id="operator-new-node", className="op-new-node")


def state_label(node: dict[str, Any]) -> str:
    """The node's state as shown: the definition's state, and "paused" beside it when alerts are paused."""
    return f"{node['state']} · paused" if node["paused"] else node["state"]


def body(v: dict[str, Any]) -> html.Div:
    nodes = [dict(n, state=state_label(n), uptime_24h=fmt.percent(n["uptime_24h"]),
                  uptime_7d=fmt.percent(n["uptime_7d"]),
                  last_ok_at=fmt.when(n["last_ok_at"]) if n["last_ok_at"] else "never",
                  paused="yes" if n["paused"] else "no", alert_status=n["alert_status"] or "-",
                  link=f"[{fmt.markdown_text(n['name'])}](/nodes/{n['node_id']})")
             for n in v["nodes"]]
    channels = [html.Li([
        html.Span(c["kind"], className="badge"), " ", html.Code(c["target"], className="op-target"),
        html.Span([
            html.Button("Test", id={"type": "operator-channel-test", "index": c["channel_id"]}, n_clicks=0,
                        className="button small"),
            html.Button("Remove", id={"type": "operator-channel-remove", "index": c["channel_id"]}, n_clicks=0,
                        className="button small secondary"),
        ], className="op-channel-buttons"),
    ], className="op-channel", **{"data-channel-id": str(c["channel_id"])}) for c in v["channels"]]
    return html.Div([
        html.H2(f"{v['operator']}: {len(nodes)} node{'' if len(nodes) == 1 else 's'}, "
                f"as of {fmt.when(v['as_of'])}", id="operator-name"),
        html.P("No nodes yet: register one above or with 'fleetscope node add'.", id="operator-no-nodes",
               className="note") if not nodes else
        dag.AgGrid(id="operator-nodes", rowData=nodes, className="ag-theme-alpine op-grid",
                   columnDefs=[{"field": "link", "headerName": "Node", "cellRenderer": "markdown", "flex": 2,
                                "minWidth": 140},
                               {"field": "state", "headerName": "State", "minWidth": 120, "flex": 1},
                               {"field": "last_ok_at", "headerName": "Last report", "minWidth": 170, "flex": 2},
                               {"field": "uptime_24h", "headerName": "Uptime 24 h", "minWidth": 110, "flex": 1},
                               {"field": "uptime_7d", "headerName": "Uptime 7 d", "minWidth": 110, "flex": 1},
                               {"field": "alert_status", "headerName": "Alert state", "minWidth": 110, "flex": 1},
                               {"field": "paused", "headerName": "Paused", "minWidth": 90, "flex": 1}],
                   defaultColDef={"sortable": True, "resizable": True},
                   dashGridOptions={"domLayout": "autoHeight", "pagination": len(nodes) > 50,
                                    "paginationPageSize": 50}),
        html.H2(f"Alert channels ({len(channels)})"),
        html.Ul(channels or [html.Li("None yet: add one above or with 'fleetscope channel add'.", className="note")],
                id="operator-channels", className="op-channels"),
        html.H2(f"Alerts sent (latest {len(v['alerts'])})"),
        html.P("No alert sent yet.", id="operator-no-alerts", className="note") if not v["alerts"] else
        dag.AgGrid(id="operator-alerts", rowData=[dict(a, attempted_at=fmt.when(a["attempted_at"]))
                                                   for a in v["alerts"]], className="ag-theme-alpine op-grid",
                   columnDefs=[{"field": "attempted_at", "headerName": "Sent", "minWidth": 170, "flex": 2},
                               {"field": "name", "headerName": "Node", "minWidth": 120, "flex": 1},
                               {"field": "event", "headerName": "Event", "minWidth": 110},
                               {"field": "kind", "headerName": "Channel", "minWidth": 100},
                               {"field": "attempt", "headerName": "Attempt", "minWidth": 90},
                               {"field": "ok", "headerName": "Delivered", "minWidth": 100},
                               {"field": "error", "headerName": "Error", "minWidth": 160, "flex": 2}],
                   dashGridOptions={"domLayout": "autoHeight"}),
    ])


def _error(text: str) -> html.P:
    return html.P(text, id="operator-error", className="bad")


# -- callbacks -----------------------------------------------------------------------

@callback(Output("operator-token-store", "data"), Output("operator-token", "value"),
          Output("operator-message", "children"),
          Input("operator-submit", "n_clicks"), Input("operator-token", "n_submit"),
          Input("operator-signout", "n_clicks"), State("operator-token", "value"), prevent_initial_call=True)
def sign_in_or_out(_clicks, _submit, _signout, token):
    if ctx.triggered_id == "operator-signout":
        return None, "", html.P("Signed out.", className="note")
    token = (token or "").strip()
    if signed_in_operator(token) is None:
        return None, "", _error("That token is not an operator's token.")
    return token, "", None


@callback(Output("operator-body", "children"), Output("operator-refresh", "disabled"),
          Output("operator-signin", "style"), Output("operator-session", "style"),
          Output("operator-actions", "style"), Output("operator-signed-in", "children"),
          Output("operator-pause-node", "options"),
          Input("operator-token-store", "modified_timestamp"), Input("operator-refresh", "n_intervals"),
          Input("operator-changed", "data"), State("operator-token-store", "data"))
def show(_stored, _n, _changed, token):
    signed_out = (None, True, SHOWN, HIDDEN, HIDDEN, None, [])
    if not token:
        return signed_out
    v = view(token)
    if v is None:  # a token that stopped working (the operator was removed)
        return (_error("That token is not an operator's token."),) + signed_out[1:]
    options = [{"label": f"{n['name']} ({state_label(n)})", "value": n["node_id"]} for n in v["nodes"]]
    return (body(v), False, HIDDEN, SHOWN, SHOWN,
            ["Signed in as ", html.B(v["operator"], id="operator-signed-in-name")], options)


@callback(Output("operator-message", "children", allow_duplicate=True),
          Output("operator-changed", "data"),
          Output("operator-node-name", "value"), Output("operator-channel-target", "value"),
          Input("operator-register", "n_clicks"), Input("operator-channel-add", "n_clicks"),
          Input("operator-pause", "n_clicks"), Input("operator-resume", "n_clicks"),
          Input({"type": "operator-channel-test", "index": ALL}, "n_clicks"),
          Input({"type": "operator-channel-remove", "index": ALL}, "n_clicks"),
          State("operator-token-store", "data"), State("operator-node-name", "value"),
          State("operator-node-scrape-url", "value"), State("operator-channel-kind", "value"),
          State("operator-channel-target", "value"), State("operator-pause-node", "value"),
          State("operator-changed", "data"), prevent_initial_call=True)
def act(_register, _add, _pause, _resume, _tests, _removes, token, name, scrape_url, kind, target, node_id, changed):
    trigger = ctx.triggered_id
    # Buttons re-rendered with the channel list fire with n_clicks 0: not a click.
    if trigger is None or not (ctx.triggered and ctx.triggered[0]["value"]):
        return no_update, no_update, no_update, no_update
    if isinstance(trigger, dict):
        action = "channel-test" if trigger["type"] == "operator-channel-test" else "channel-remove"
        ok, message, node_token = perform(action, token, channel_id=trigger["index"])
    else:
        action = {"operator-register": "register", "operator-channel-add": "channel-add",
                  "operator-pause": "pause", "operator-resume": "resume"}[trigger]
        ok, message, node_token = perform(action, token, name=name, scrape_url=scrape_url, kind=kind,
                                          target=target, node_id=node_id)
    shown: list[Any] = [html.P(message, id="operator-ok" if ok else "operator-error", className="ok" if ok else "bad")]
    if node_token:
        shown.append(new_node_box(node_token, collector=collector_url(flask.current_app.config.get(COLLECTOR_URL_KEY))))
    clear_name = "" if ok and action == "register" else no_update
    clear_target = "" if ok and action == "channel-add" else no_update
    return shown, (changed or 0) + 1 if ok else no_update, clear_name, clear_target


dash.register_page(__name__, path="/operator", name="Operator", title="fleetscope · operator view", layout=layout)
