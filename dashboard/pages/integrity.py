"""/integrity : verification counts, open findings by kind, every consistency check, every finding."""

from __future__ import annotations

import json
from datetime import datetime

import dash
from dash import Input, Output, callback, dcc, html, no_update

from fleetscope.snapshot import SNAPSHOT_TICK_S

from dashboard import format as fmt
from dashboard.app import service
from dashboard.grids import NUMBER, WRAP, column, grid, time_column
from dashboard.pages.overview import checks


SHOWN = 1000
PROOFS_SHOWN = 500
VERDICT_TEXT = {"passed": "passed", "failed": "failed", "no_answer": "no answer"}


def layout(**_kwargs):
    # The clicked finding's detail sits under the findings grid (the body's
    # last section) but outside the body, so a refresh does not close it.
    return html.Div([dcc.Interval(id="integrity-refresh", interval=SNAPSHOT_TICK_S * 1000),
                     html.Div(render(), id="integrity-body"),
                     html.Div(html.P("Click a finding to see its full evidence.", className="note"),
                              id="integrity-finding-detail", className="evidence-detail")])


@callback(Output("integrity-body", "children"), Input("integrity-refresh", "n_intervals"), prevent_initial_call=True)
def refresh(_n):
    return render()


def render():
    ex = service()
    body = ex.integrity(kind=None, open_only=False, limit=SHOWN, offset=0)
    published = ex.published()
    rows = [_finding_row(f) for f in body["items"]]
    g = body["gpus"]
    proofs = ex.proofs(node_id=None, verdict=None, limit=PROOFS_SHOWN, offset=0, as_of=_as_of(body))
    return html.Div([
        html.H1("Integrity"),
        html.Div([f"As of {fmt.when(body['as_of'])} · snapshot ", html.Code(body["snapshot_sha256"]),
                  " · download ", html.A("findings CSV", href="/api/v1/integrity?format=csv&limit=1000"),
                  " · ", html.A("JSON", href="/api/v1/integrity")], className="asof"),
        html.Div([
            html.Div([html.Div("verified GPUs", className="stat-label"),
                      html.Div(fmt.number("integrity-verified", g["verified"], fmt.integer(g["verified"])),
                               className="stat-value ok")], className="stat"),
            html.Div([html.Div("unverified GPUs", className="stat-label"),
                      html.Div(fmt.number("integrity-unverified", g["unverified"], fmt.integer(g["unverified"])),
                               className="stat-value")], className="stat"),
            html.Div([html.Div("flagged GPUs", className="stat-label"),
                      html.Div(fmt.number("integrity-flagged", g["flagged"], fmt.integer(g["flagged"])),
                               className="stat-value bad" if g["flagged"] else "stat-value")], className="stat"),
            html.Div([html.Div("open findings", className="stat-label"),
                      html.Div(fmt.number("integrity-open_findings", body["open_findings"],
                                          fmt.integer(body["open_findings"])), className="stat-value")],
                     className="stat"),
        ], className="stats"),
        html.P("A flagged GPU has an open integrity finding and is never counted as verified. Open findings by kind: "
               + (", ".join(f"{k} {v:,}" for k, v in sorted(body["by_kind"].items())) or "none") + ".",
               id="integrity-by-kind", className="note"),
        _proofs(proofs),
        html.Section([html.H2("Consistency checks of this snapshot"), checks(body["checks"])]),
        html.Section([
            html.H2("Published snapshots: a hash chain with data bundles"),
            html.P(["Every hour a snapshot is published; each record carries the previous one's hash. Download a "
                    "bundle and recompute every number yourself: ", html.Code("fleetscope verify BUNDLE.zip"),
                    ". Format: docs/bundle.md. All of them: ", html.A("JSON", href="/api/v1/snapshots"), "."],
                   className="note"),
            html.Table([
                html.Thead(html.Tr([html.Th("as of"), html.Th("record SHA-256"), html.Th("snapshot SHA-256"),
                                    html.Th("bundle")])),
                html.Tbody([html.Tr([
                    html.Td(fmt.when(p["as_of"])), html.Td(html.Code(p["sha256"][:16] + "…")),
                    html.Td(html.Code(p["snapshot_sha256"][:16] + "…")),
                    html.Td(html.A(f"{_size(p['bundle_bytes'])} zip",
                                   href=f"/api/v1/snapshots/{p['snapshot_id']}/bundle") if p["bundle"] else "gone"),
                ]) for p in published] or [html.Tr(html.Td("None yet: the collector publishes every hour.",
                                                         colSpan=4))]),
            ], id="integrity-published", className="table"),
        ]),
        html.Section([
            html.H2(f"Findings ({body['total']:,}{', newest ' + str(SHOWN) + ' shown' if body['total'] > SHOWN else ''})"),
            grid("integrity-findings", _finding_columns(rows), rows=rows, page_size=25,
                 grid_options={"rowSelection": {"mode": "singleRow", "checkboxes": False,
                                                "enableClickSelection": True}}),
        ]),
    ])


def _finding_row(f) -> dict:
    """A finding as the grid shows it: times in the grids' format, evidence summed up in one line, in full on click."""
    return {"finding_id": f["finding_id"], "kind": f["kind"], "open": "open" if f["open"] else "resolved",
            "node": f"[{fmt.markdown_text(f['node_name'])}](/nodes/{f['node_id']})" if f["node_id"] else "",
            "node_name": f["node_name"] or "", "gpu_uuid": f["gpu_uuid"] or "all of the node's",
            "first_seen": fmt.when(f["first_seen"], zone=False), "last_seen": fmt.when(f["last_seen"], zone=False),
            "resolution": f["resolution"] or "", "evidence": fmt.evidence(f["evidence"]),
            "detail": json.dumps(f["evidence"], indent=2, sort_keys=True, ensure_ascii=False)}


def _finding_columns(rows) -> list[dict]:
    return [
        column("kind", "Kind", [r["kind"] for r in rows] or ["identity_change"], filter=True),
        column("open", "Status", ["resolved"], filter=True),
        column("node", "Node", [r["node_name"] for r in rows], lo=80, hi=280, cellRenderer="markdown"),
        column("gpu_uuid", "GPU", [r["gpu_uuid"] for r in rows], lo=120, filter=True),
        column("evidence", "Evidence (click a row for all of it)", [], lo=220, flex=1, **WRAP),
        time_column("first_seen", "First seen (UTC)"),
        time_column("last_seen", "Last seen (UTC)"),
    ]


def _proof_columns(rows) -> list[dict]:
    return [
        column("model", "Model", [r["model"] for r in rows], lo=100, filter=True),
        column("node", "Node", [r["node_name"] for r in rows], lo=80, hi=280, cellRenderer="markdown"),
        column("gpu_uuid", "GPU", [r["gpu_uuid"] for r in rows], lo=120, filter=True),
        column("verdict", "Verdict", ["no answer"], filter=True),
        time_column("decided_at", "Decided (UTC)"),
        column("seconds", "Seconds", [r["seconds"] for r in rows], **NUMBER),
        column("tflops", "TFLOPS", [r["tflops"] for r in rows], **NUMBER),
        column("round_id", "Round", [r["round_id"] for r in rows], **NUMBER),
        column("reason", "Reason", [], lo=180, flex=1, **WRAP),
    ]


@callback(Output("integrity-finding-detail", "children"), Input("integrity-findings", "selectedRows"),
          prevent_initial_call=True)
def finding_detail(selected):
    """The clicked finding's whole evidence; kept when a refresh clears the selection."""
    if not selected:
        return no_update
    f = selected[0]
    resolved = f" ({f['resolution']})" if f["resolution"] else ""
    return [html.Strong(f"{f['kind']} · {f['open']}{resolved} · GPU {f['gpu_uuid']} · "
                        f"first seen {f['first_seen']} UTC"),
            html.Pre(f["detail"], id="integrity-finding-evidence", className="evidence")]


def _as_of(body) -> datetime:
    return datetime.fromisoformat(body["as_of"].replace("Z", "+00:00"))


def _proofs(page) -> html.Section:
    """The last 24 h of proofs of GPU (fleetscope.explorer.proof_summary) and the newest verdicts."""
    s = page["last_24h"]
    rows = [{"model": p["model"], "node": f"[{fmt.markdown_text(p['node_name'])}](/nodes/{p['node_id']})",
             "node_name": p["node_name"],
             "gpu_uuid": p["gpu_uuid"], "verdict": VERDICT_TEXT[p["verdict"]], "reason": p["reason"] or "",
             "seconds": None if p["seconds"] is None else round(p["seconds"], 3),
             "tflops": None if p["tflops"] is None else float(fmt.tflops(p["tflops"]).replace(",", "")),
             "round_id": p["round_id"], "decided_at": fmt.when(p["decided_at"], zone=False)}
            for p in page["items"]]

    def stat(label: str, key: str, css: str = "stat-value") -> html.Div:
        return html.Div([html.Div(label, className="stat-label"),
                         html.Div(fmt.number(f"integrity-proofs-{key}", s[key], fmt.integer(s[key])), className=css)],
                        className="stat")

    return html.Section([
        html.H2(["Proofs of GPU, last 24 h ",
                 html.A(f"protocol v{page['protocol_version']}", href="/methodology#proof-of-gpu", className="badge")]),
        html.P(["A GPU is verified only by work it did: at random times the collector challenges a random share of "
                "the nodes, all their GPUs at once, with a matrix product sized to about 2 s on the claimed model, "
                "and checks random entries of the answer. A pass in the last 24 h makes a GPU verified; a failure "
                "flags it (a proof_failed finding) until it passes again; a GPU never challenged (a host with no "
                "prover, such as plain dcgm-exporter) is counted but stays unverified. Every verdict: ",
                html.A("JSON", href="/api/v1/proofs"), " · ", html.A("CSV", href="/api/v1/proofs?format=csv&limit=1000"),
                "."], className="note"),
        html.Div([
            stat("passed", "passed", "stat-value ok"),
            stat("failed", "failed", "stat-value bad" if s["failed"] else "stat-value"),
            stat("no answer", "no_answer"),
            stat("rounds", "rounds"),
            html.Div([html.Div("last round opened", className="stat-label"),
                      html.Div(html.Span(fmt.when(s["last_round_at"]), id="integrity-proofs-last_round_at",
                                         **{"data-value": str(s["last_round_at"])}), className="stat-value small")],
                     className="stat"),
        ], className="stats"),
        html.H2(f"Recent verdicts ({page['total']:,}"
                f"{', newest ' + str(PROOFS_SHOWN) + ' shown' if page['total'] > PROOFS_SHOWN else ''})"),
        grid("integrity-proofs", _proof_columns(rows), rows=rows, page_size=25),
    ], id="integrity-proof")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(n / 1e3, 0.1):.1f} kB"


dash.register_page(__name__, path="/integrity", name="Integrity", title="fleetscope · integrity", layout=layout)
