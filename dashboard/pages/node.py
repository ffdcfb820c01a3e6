"""/nodes/<node_id> : one node's state, GPUs, uptime, reputation with its inputs, findings, history."""

from __future__ import annotations

import json
from datetime import datetime

import dash
from dash import Input, Output, State, callback, dcc, html

from fleetscope import series
from fleetscope.snapshot import SNAPSHOT_TICK_S

from dashboard import charts
from dashboard import format as fmt
from dashboard.app import service
from dashboard.grids import NUMBER, column, grid


STATE_CLASS = {"up": "ok", "late": "warn", "down": "off", "new": "off"}
VERDICT_CLASS = {"passed": "ok", "failed": "bad", "no_answer": "off"}
VERDICT_TEXT = {"passed": "passed", "failed": "failed", "no_answer": "no answer"}
# What a node that was never challenged says (docs/proof.md): without a
# prover, all there is to go on is what the host reports, and that can be forged.
NO_PROOF = ("This node has no proof of GPU: it has never been challenged, so its GPUs are counted but never "
            "verified. A host that is scraped only, or runs plain dcgm-exporter, has no prover; "
            "fleetscope-exporter proves its GPUs when it pushes to the collector.")


RANGE_OPTIONS = [{"label": {"24h": "24 h", "7d": "7 days", "30d": "30 days"}[name], "value": name}
                 for name in series.RANGES]


def layout(node_id: str = "", **_kwargs):
    return html.Div([dcc.Interval(id="node-refresh", interval=SNAPSHOT_TICK_S * 1000),
                     dcc.Store(id="node-id", data=node_id), html.Div(body(node_id), id="node-body"),
                     html.Div([html.H2("Over time", className="inline"),
                               dcc.RadioItems(id="node-range", options=RANGE_OPTIONS, value=series.DEFAULT_RANGE,
                                              inline=True, className="range-picker")], className="range-bar"),
                     html.Div(charts_section(node_id, series.DEFAULT_RANGE), id="node-charts")])


@callback(Output("node-body", "children"), Input("node-refresh", "n_intervals"), State("node-id", "data"),
          prevent_initial_call=True)
def refresh(_n, node_id):
    return body(node_id or "")


@callback(Output("node-charts", "children"), Input("node-refresh", "n_intervals"), Input("node-range", "value"),
          State("node-id", "data"), prevent_initial_call=True)
def refresh_charts(_n, rng, node_id):
    return charts_section(node_id or "", rng if rng in series.RANGES else series.DEFAULT_RANGE)


def charts_section(node_id: str, rng_name: str):
    """The node's uptime bars, utilisation and reputation over the chosen range."""
    ex = service()
    nid = fmt.parse_id(node_id)
    at = ex.tick()
    if nid is None or nid not in ex.tables(as_of=at).node_rows:
        return []
    rng = series.get_range(rng_name)
    data = ex.node_series(nid, rng, as_of=at)
    bar = {"24h": "hour", "7d": "6 hours", "30d": "day"}[rng.name]
    step = f"{rng.telemetry_step_s // 60} minutes" if rng.telemetry_step_s < 3600 else \
        f"{rng.telemetry_step_s // 3600} h"
    banner = (html.Div(charts.span_text(data["simulated"]), id="simulated-banner", className="simulated-banner")
              if data["simulated"] else html.Div(id="simulated-banner", hidden=True))
    return [
        banner,
        html.Section([html.H2(f"Uptime per {bar}"),
                      dcc.Graph(id="node-history", figure=charts.uptime_figure(data), config=charts.CONFIG),
                      html.P(["Each bar is the uptime definition over its span: slots seen of slots observed "
                              "(grey bands: our own outages, left out). ",
                              html.A("JSON", href=f"/api/v1/nodes/{nid}/series?range={rng.name}")],
                             className="note")]),
        html.Div([
            html.Section([html.H2(f"GPU utilisation ({step} means)"),
                          dcc.Graph(id="node-telemetry", figure=charts.utilisation_figure(data),
                                    config=charts.CONFIG)], className="half"),
            html.Section([html.H2("Reputation"),
                          dcc.Graph(id="node-reputation-history", figure=charts.reputation_figure(data),
                                    config=charts.CONFIG),
                          html.P("The score as the formula gave it at each point, with its inputs on hover.",
                                 className="note")], className="half"),
        ], className="row"),
    ]


def body(node_id: str):
    ex = service()
    nid = fmt.parse_id(node_id)
    at = ex.tick()  # one as-of time for everything on the page
    detail = ex.node(nid, as_of=at) if nid is not None else None
    if detail is None:
        return html.Div([html.H1("Node not found", id="node-not-found"),
                         html.P(["There is no node ", html.Code(node_id[:40]), ". ",
                                 dcc.Link("All nodes", href="/nodes")])])
    nid = detail["node_id"]
    state = detail["state"]
    rep = detail["reputation"]
    inputs = rep["inputs"]
    return html.Div([
        html.H1([detail["name"], " ", html.Span(state["status"], id="node-status",
                                                 className=f"badge {STATE_CLASS[state['status']]}")]),
        html.Div([f"node {nid} · operator {detail['operator']} · registered {fmt.when(detail['registered_at'])} · "
                  f"interval {detail['interval_s']} s, grace {detail['grace_s']} s · last seen ",
                  html.Span(fmt.when(state["last_ok"]), id="node-last_ok"),
                  f" · as of {fmt.when(detail['as_of'])} · ",
                  html.A("download JSON", href=f"/api/v1/nodes/{nid}")], className="asof"),
        html.Div([
            html.Section([
                html.H2("Uptime"),
                html.Div([
                    _uptime("last 24 h", "node-uptime_24h", detail["uptime_24h"]),
                    _uptime("last 7 days", "node-uptime_7d", detail["uptime_7d"]),
                ], className="stats"),
            ], className="half"),
            html.Section([
                html.H2(["Reputation ", html.Span(f"formula v{rep['formula_version']}", className="badge")]),
                html.Div([fmt.number("node-reputation", rep["score"], f"{rep['score']:.2f}"),
                          html.Span("/ 100", className="unit")], className="stat-value big"),
                html.Code(rep["formula"]),
                html.Table(html.Tbody([
                    _row("V (verification)", f"{inputs['V']}", f"{inputs['gpus_verified']} verified, "
                         f"{inputs['gpus_unverified']} unverified, {inputs['gpus_flagged']} flagged GPUs"),
                    _row("U7 (uptime, 7 d)", fmt.percent(inputs["U7"]), _slots(inputs["uptime_7d_slots"])),
                    _row("U1 (uptime, 24 h)", fmt.percent(inputs["U1"]), _slots(inputs["uptime_24h_slots"])),
                    _row("J (job success, 30 d)", f"{inputs['J']:.4f}",
                         f"({inputs['jobs_succeeded_30d']} + 1) / ({inputs['jobs_finished_30d']} + 2)"),
                ]), id="node-reputation-inputs", className="table"),
            ], className="half"),
        ], className="row"),
        html.Section([
            html.H2(f"GPUs ({len(detail['gpus'])})"),
            gpu_grid(detail["gpus"]),
        ]),
        _proofs(nid, detail["gpus"], detail["proofs"], detail["as_of"]),
        html.Section([html.H2(f"Integrity findings ({detail['findings']['total']})"),
                      _findings(detail["findings"]["items"])]),
    ])


def gpu_grid(gpus) -> html.Div:
    """The node's GPU claims: one row each, every column as wide as its content (dashboard/grids.py)."""
    rows = [dict(g, shared="shared" if g["shared"] else "") for g in gpus]
    return grid("node-gpus", [
        column("gpu_index", "#", [g["gpu_index"] for g in rows], **NUMBER),
        column("gpu_uuid", "GPU UUID", [g["gpu_uuid"] for g in rows], lo=120),
        column("model", "Model", [g["model"] for g in rows], lo=100, flex=1),
        column("memory_gib", "Memory (GiB)", [g["memory_gib"] for g in rows], **NUMBER),
        column("state", "State", [g["state"] for g in rows]),
        column("verification", "Verification", [g["verification"] for g in rows]),
        column("shared", "UUID shared", [g["shared"] for g in rows]),
    ], rows=rows, page_size=25)


def _uptime(label: str, element_id: str, u) -> html.Div:
    return html.Div([html.Div(label, className="stat-label"),
                     html.Div(fmt.number(element_id, u["ratio"], fmt.percent(u["ratio"])), className="stat-value"),
                     html.Div(_slots(u), className="detail")], className="stat")


def _slots(u) -> str:
    return (f"{u['ok_slots']:,} of {u['observed_slots']:,} slots seen"
            + (f"; {u['window_slots'] - u['observed_slots']:,} left out (fleetscope not observing)"
               if u["window_slots"] != u["observed_slots"] else ""))


def _row(name: str, value: str, why: str) -> html.Tr:
    return html.Tr([html.Th(name), html.Td(value, className="num"), html.Td(why, className="detail")])


def _findings(items) -> html.Div:
    if not items:
        return html.P("None.", id="node-findings", className="note")
    return html.Ul([html.Li([html.Span("open" if f["open"] else "resolved", className="bad" if f["open"] else "off"),
                             " ", html.Strong(f["kind"]), f" · GPU {f['gpu_uuid'] or 'all'} · first seen "
                             f"{fmt.when(f['first_seen'])}", html.Div(fmt.evidence(f["evidence"]), className="detail"),
                             html.Details([html.Summary("full evidence"),
                                           html.Pre(json.dumps(f["evidence"], indent=2, sort_keys=True,
                                                               ensure_ascii=False), className="evidence")])])
                    for f in items], id="node-findings", className="checks")


def _proofs(nid: int, gpus, proofs, as_of: str) -> html.Section:
    """Each GPU's latest proof of GPU: verdict, its measure or reason, when, the round."""
    head = html.H2(["Proof of GPU ", html.A("how it works", href="/methodology#proof-of-gpu", className="badge")])
    if not any(proofs.values()):
        return html.Section([head, html.P(NO_PROOF, id="node-proofs-none", className="note")], id="node-proof")
    index = {g["gpu_uuid"]: g["gpu_index"] for g in gpus}
    rows = []
    for uuid, p in proofs.items():
        gpu = html.Td([html.Span(f"#{index[uuid]} " if index.get(uuid) is not None else ""), html.Code(uuid)],
                      className="nowrap")
        if p is None:
            rows.append(html.Tr([gpu, html.Td(html.Span("none", className="badge off")),
                                 html.Td("never challenged: counted, not verified", className="detail"),
                                 html.Td("never"), html.Td("")]))
            continue
        if p["verdict"] == "passed":
            why = (f"{p['seconds']:.2f} s of a {p['budget_s']:.2f} s budget (n = {p['n']:,}, k = {p['k']:,}): "
                   f"{fmt.tflops(p['tflops'])} TFLOPS implied; "
                   + (f"counts towards verified until {fmt.when(p['valid_until'])}"
                      if _time(p["valid_until"]) > _time(as_of) else "more than 24 h ago: no longer counts"))
        elif p["verdict"] == "failed":
            why = p["reason"] or "failed"
        else:
            why = p["reason"] or "the host did not answer the challenge"
        rows.append(html.Tr([gpu, html.Td(html.Span(VERDICT_TEXT[p["verdict"]],
                                                    className=f"badge {VERDICT_CLASS[p['verdict']]}")),
                             html.Td(why, className="detail"), html.Td(fmt.when(p["decided_at"]), className="nowrap"),
                             html.Td(html.A(f"{p['round_id']}", href=f"/api/v1/proofs?node_id={nid}"))]))
    return html.Section([
        head,
        html.P(["Each GPU's latest proof: a passed proof in the last 24 h makes a GPU verified unless a finding "
               "flags it; a failed one flags it (a proof_failed finding) until it passes again. Every verdict: ",
                html.A("JSON", href=f"/api/v1/proofs?node_id={nid}"), "."], className="note"),
        html.Table([html.Thead(html.Tr([html.Th("GPU"), html.Th("latest verdict"), html.Th("seconds, TFLOPS or reason"),
                                        html.Th("decided"), html.Th("round")])),
                    html.Tbody(rows)], id="node-proofs", className="table"),
    ], id="node-proof")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


dash.register_page(__name__, path_template="/nodes/<node_id>", name="Node", title="fleetscope · node", layout=layout)
