"""/ : the fleet snapshot's headline numbers, its checks, and the fleet over time."""

from __future__ import annotations

import dash
from dash import Input, Output, callback, dcc, html

from fleetscope import series
from fleetscope.snapshot import SNAPSHOT_TICK_S

from dashboard import charts
from dashboard import format as fmt
from dashboard.app import service


def layout(**_kwargs):
    return html.Div([
        dcc.Interval(id="overview-refresh", interval=SNAPSHOT_TICK_S * 1000),
        html.Div(body(), id="overview-body"),
        html.Div([html.H2("Over time", className="inline"),
                  dcc.RadioItems(id="overview-range", options=RANGE_OPTIONS, value=series.DEFAULT_RANGE,
                                 inline=True, className="range-picker")], className="range-bar"),
        html.Div(charts_section(series.DEFAULT_RANGE), id="overview-charts"),
    ])


RANGE_OPTIONS = [{"label": {"24h": "24 h", "7d": "7 days", "30d": "30 days"}[name], "value": name}
                 for name in series.RANGES]


@callback(Output("overview-body", "children"), Input("overview-refresh", "n_intervals"), prevent_initial_call=True)
def refresh(_n):
    return body()


@callback(Output("overview-charts", "children"), Input("overview-refresh", "n_intervals"),
          Input("overview-range", "value"), prevent_initial_call=True)
def refresh_charts(_n, rng):
    return charts_section(rng if rng in series.RANGES else series.DEFAULT_RANGE)


def charts_section(rng_name: str):
    """The charts over the chosen range, rendered once per tick and range per process."""
    ex = service()
    tick = ex.tick()
    return ex.cache.local(f"overview-charts-{rng_name}-{int(tick.timestamp())}",
                          lambda: _charts(ex, tick, series.get_range(rng_name)))


def _charts(ex, tick, rng):
    data = ex.fleet_series(rng, as_of=tick)
    snap = ex.snapshot(as_of=tick)
    bucket = "hour" if rng.money_bucket.total_seconds() == 3600 else "day (UTC)"
    return [
        html.Section([
            html.H2("Registered, online and hired GPUs"),
            dcc.Graph(id="overview-history", figure=charts.fleet_figure(data), config=charts.CONFIG),
            html.P(["Each point is the snapshot's own count at that time. Dotted red lines: fleet jumps "
                    "(the integrity check's findings); grey bands: our own outages (no collector heartbeat, "
                    "left out of every node's uptime). ",
                    html.A("JSON", href=f"/api/v1/fleet/series?range={rng.name}")], className="note"),
        ]),
        html.Div([
            html.Section([html.H2("GPUs by model, now"),
                          dcc.Graph(id="overview-models", figure=charts.models_figure(snap.body["by_model"]),
                                    config=charts.CONFIG),
                          models(snap.body["by_model"])], className="half"),
            html.Section([html.H2(f"GPU-hours and revenue per {bucket}"),
                          dcc.Graph(id="overview-daily", figure=charts.money_figure(data), config=charts.CONFIG),
                          html.P(["Accrued from the jobs ledger; the last bar is the part so far. ",
                                  html.A("JSON", href=f"/api/v1/fleet/series?range={rng.name}")],
                                 className="note")],
                         className="half"),
        ], className="row"),
    ]


def _banner(simulated):
    if not simulated:
        return html.Div(id="simulated-banner", hidden=True)
    return html.Div(charts.span_text(simulated), id="simulated-banner", className="simulated-banner")


def _stat(label: str, path: str, value, text: str, unit: str, *, kind: str = "") -> html.Div:
    return html.Div([
        html.Div(label, className="stat-label"),
        html.Div([fmt.number(f"fleet-{path}", value, text), html.Span(unit, className="unit")],
                 className=f"stat-value {kind}"),
    ], className="stat")


def body():
    # Rendered once per tick per process: every visitor's refresh in a tick
    # gets the same components (building the figures is most of a render).
    ex = service()
    tick = ex.tick()
    return ex.cache.local(f"overview-{int(tick.timestamp())}", lambda: _render(ex, tick))


def _render(ex, tick):
    snap = ex.snapshot(as_of=tick)
    s = snap.body
    n, g = s["nodes"], s["gpus"]
    i = fmt.integer
    return [
        _banner(ex.simulated(as_of=tick)),
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
        html.Section([html.H2("Consistency checks"), checks(s["checks"], ex=ex, tick=tick)]),
    ]


def checks(items, *, ex=None, tick=None) -> html.Ul:
    """The snapshot's checks; a failing one that nodes break links to those nodes (fleetscope/check_nodes.py)."""
    out = []
    for c in items:
        parts = [html.Span("✓ holds" if c["ok"] else "✗ FAILS", className="ok" if c["ok"] else "bad"),
                 " ", html.Strong(c["name"]), html.Div(c["detail"], className="detail")]
        if not c["ok"] and ex is not None:
            behind = ex.check_nodes(c["name"], as_of=tick)
            if behind:
                links = []
                for n in behind:
                    links += [", " if links else "", dcc.Link(n["name"], href=f"/nodes/{n['node_id']}",
                                                               title=n["detail"])]
                parts.append(html.Div(["Nodes: ", *links, " · ",
                                       html.A("JSON", href=f"/api/v1/checks/{c['name']}/nodes")],
                                      id=f"check-{c['name']}-nodes", className="detail check-nodes"))
        out.append(html.Li(parts, id=f"check-{c['name']}", className="check"))
    return html.Ul(out, id="fleet-checks", className="checks")


def models(by_model) -> html.Table:
    return html.Table([
        html.Thead(html.Tr([html.Th("model"), html.Th("registered"), html.Th("online"), html.Th("hired")])),
        html.Tbody([html.Tr([html.Td(m["model"]), html.Td(fmt.integer(m["registered"]), className="num"),
                             html.Td(fmt.integer(m["online"]), className="num"),
                             html.Td(fmt.integer(m["hired"]), className="num")]) for m in by_model]),
    ], id="fleet-by_model", className="table")


dash.register_page(__name__, path="/", name="Overview", title="fleetscope · fleet overview", layout=layout)
