"""/ : the fleet snapshot's headline numbers, its checks, and the fleet over time."""

from __future__ import annotations

import dash
import plotly.graph_objects as go
from dash import Input, Output, callback, dcc, html

from fleetscope.snapshot import SNAPSHOT_TICK_S

from dashboard import format as fmt
from dashboard.app import explorer


STATE_COLOURS = {"online": "#1a7f37", "hired": "#0969da", "offline": "#6e7781", "flagged": "#cf222e",
                 "hired_offline": "#bf8700"}


def layout(**_kwargs):
    return html.Div([
        dcc.Interval(id="overview-refresh", interval=SNAPSHOT_TICK_S * 1000),
        html.Div(body(), id="overview-body"),
    ])


@callback(Output("overview-body", "children"), Input("overview-refresh", "n_intervals"), prevent_initial_call=True)
def refresh(_n):
    return body()


def _stat(label: str, path: str, value, text: str, unit: str, *, kind: str = "") -> html.Div:
    return html.Div([
        html.Div(label, className="stat-label"),
        html.Div([fmt.number(f"fleet-{path}", value, text), html.Span(unit, className="unit")],
                 className=f"stat-value {kind}"),
    ], className="stat")


def body():
    # Rendered once per tick per process: every visitor's refresh in a tick
    # gets the same components (building the figures is most of a render).
    ex = explorer()
    tick = ex.tick()
    return ex.cache.local(f"overview-{int(tick.timestamp())}", lambda: _render(ex, tick))


def _render(ex, tick):
    snap = ex.snapshot(as_of=tick)
    s = snap.body
    n, g = s["nodes"], s["gpus"]
    i = fmt.integer
    return [
        html.Div([
            html.H1("Fleet overview"),
            html.Div([
                "As of ", html.Span(fmt.when(s["as_of"]), id="fleet-as_of", **{"data-value": s["as_of"]}),
                " · snapshot SHA-256 ", html.Code(snap.sha256, id="fleet-snapshot_sha256"),
                " · ", html.A("download JSON", href="/api/v1/fleet", download="fleetscope-snapshot.json"),
            ], className="asof"),
        ], className="heading"),
        html.Section([
            html.H2("Nodes"),
            html.Div([
                _stat("registered", "nodes-registered", n["registered"], i(n["registered"]), "nodes"),
                _stat("online", "nodes-online", n["online"], i(n["online"]), "nodes", kind="ok"),
                _stat("offline", "nodes-offline", n["offline"], i(n["offline"]), "nodes", kind="off"),
            ], className="stats"),
            html.H2("GPUs (distinct UUIDs)"),
            html.Div([
                _stat("registered", "gpus-registered", g["registered"], i(g["registered"]), "GPUs"),
                _stat("online", "gpus-online", g["online"], i(g["online"]), "GPUs", kind="ok"),
                _stat("offline", "gpus-offline", g["offline"], i(g["offline"]), "GPUs", kind="off"),
                _stat("hired", "gpus-hired", g["hired"], i(g["hired"]), "GPUs", kind="hired"),
                _stat("idle", "gpus-idle", g["idle"], i(g["idle"]), "GPUs"),
                _stat("hired but offline", "gpus-hired_offline", g["hired_offline"], i(g["hired_offline"]),
                      "GPUs", kind="warn" if g["hired_offline"] else ""),
            ], className="stats"),
            html.Div([
                _stat("verified", "gpus-verified", g["verified"], i(g["verified"]), "GPUs", kind="ok"),
                _stat("unverified", "gpus-unverified", g["unverified"], i(g["unverified"]), "GPUs"),
                _stat("flagged", "gpus-flagged", g["flagged"], i(g["flagged"]), "GPUs",
                      kind="bad" if g["flagged"] else ""),
            ], className="stats"),
            html.H2("Compute and revenue (accrued from the jobs ledger)"),
            html.Div([
                _stat("GPU-hours, last 24 h", "gpu_hours-last_24h", s["gpu_hours"]["last_24h"],
                      fmt.hours(s["gpu_hours"]["last_24h"]), "GPU-h"),
                _stat("GPU-hours, total", "gpu_hours-total", s["gpu_hours"]["total"],
                      fmt.hours(s["gpu_hours"]["total"]), "GPU-h"),
                _stat("revenue, last 24 h", "revenue_usd-last_24h", s["revenue_usd"]["last_24h"],
                      fmt.usd(s["revenue_usd"]["last_24h"]), "USD"),
                _stat("revenue, total", "revenue_usd-total", s["revenue_usd"]["total"],
                      fmt.usd(s["revenue_usd"]["total"]), "USD"),
            ], className="stats"),
        ]),
        html.Section([html.H2("Consistency checks"), checks(s["checks"])]),
        html.Section([
            html.H2("Online and hired GPUs, last 24 h"),
            dcc.Graph(id="overview-history", figure=history_figure(ex, tick), config={"displaylogo": False}),
            html.P(["Each point is the snapshot's own count at that time, every 15 minutes. ",
                    html.A("JSON", href="/api/v1/fleet/history")], className="note"),
        ]),
        html.Div([
            html.Section([html.H2("GPUs by model"), models(s["by_model"])], className="half"),
            html.Section([html.H2("GPU-hours and revenue per day (UTC)"),
                          dcc.Graph(id="overview-daily", figure=daily_figure(ex.daily(as_of=tick)),
                                    config={"displaylogo": False}),
                          html.P(html.A("JSON", href="/api/v1/fleet/daily"), className="note")],
                         className="half"),
        ], className="row"),
    ]


def checks(items) -> html.Ul:
    return html.Ul([
        html.Li([html.Span("✓ holds" if c["ok"] else "✗ FAILS", className="ok" if c["ok"] else "bad"),
                 " ", html.Strong(c["name"]), html.Div(c["detail"], className="detail")],
                id=f"check-{c['name']}", className="check")
        for c in items], id="fleet-checks", className="checks")


def models(by_model) -> html.Table:
    return html.Table([
        html.Thead(html.Tr([html.Th("model"), html.Th("registered"), html.Th("online"), html.Th("hired")])),
        html.Tbody([html.Tr([html.Td(m["model"]), html.Td(fmt.integer(m["registered"]), className="num"),
                             html.Td(fmt.integer(m["online"]), className="num"),
                             html.Td(fmt.integer(m["hired"]), className="num")]) for m in by_model]),
    ], id="fleet-by_model", className="table")


def history_figure(ex, tick) -> go.Figure:
    points = ex.history(as_of=tick)
    times = [p["as_of"] for p in points]
    fig = go.Figure()
    for key, name, colour in (("registered", "registered", "#8c959f"), ("online", "online", STATE_COLOURS["online"]),
                              ("hired", "hired", STATE_COLOURS["hired"])):
        fig.add_trace(go.Scattergl(x=times, y=[p["gpus"][key] for p in points], name=name, mode="lines+markers",
                                   line={"color": colour, "width": 2}, marker={"size": 4}))
    for jump in ex.fleet_jumps(as_of=tick):
        at = (jump.get("evidence") or {}).get("at") or jump["first_seen"]
        fig.add_vline(x=at, line={"color": STATE_COLOURS["flagged"], "dash": "dot"})
        fig.add_annotation(x=at, y=1, yref="paper", text=f"fleet jump ({(jump.get('evidence') or {}).get('metric', '')})",
                           showarrow=False, font={"color": STATE_COLOURS["flagged"]}, xanchor="left")
    _style(fig, "GPUs")
    return fig


def daily_figure(days) -> go.Figure:
    fig = go.Figure()
    x = [d["day"] for d in days]
    fig.add_trace(go.Bar(x=x, y=[d["gpu_hours"] for d in days], name="GPU-hours", marker={"color": "#0969da"}))
    fig.add_trace(go.Scatter(x=x, y=[d["revenue_usd"] for d in days], name="revenue (USD)", yaxis="y2",
                             mode="lines+markers", line={"color": "#1a7f37"}))
    _style(fig, "GPU-hours")
    fig.update_layout(yaxis2={"title": "USD", "overlaying": "y", "side": "right", "rangemode": "tozero"})
    return fig


def _style(fig: go.Figure, y_title: str) -> None:
    fig.update_layout(template="plotly_white", height=320, margin={"l": 50, "r": 50, "t": 20, "b": 40},
                      legend={"orientation": "h", "y": -0.2}, yaxis={"title": y_title, "rangemode": "tozero"},
                      font={"family": "Inter, system-ui, sans-serif"})


dash.register_page(__name__, path="/", name="Overview", title="fleetscope · fleet overview", layout=layout)
