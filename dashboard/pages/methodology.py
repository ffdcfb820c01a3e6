"""/methodology : every definition and formula with its version, generated from the code itself."""

from __future__ import annotations

import dash
from dash import dcc, html

from fleetscope.methodology import definitions



def layout(**_kwargs):
    return html.Div([
        html.H1("Methodology"),
        html.P(["Every number on this site has one definition in fleetscope's code. This page is generated from "
                "that code at run time: the text is the code's own documentation, and the functions and SQL below "
                "are the ones that compute the numbers. Also as ", html.A("JSON", href="/api/v1/methodology"), "."],
               className="note"),
        html.Ul([html.Li(html.A(d["title"], href=f"#{d['id']}")) for d in definitions()], className="toc"),
        *[_definition(d) for d in definitions()],
    ])


def _definition(d) -> html.Section:
    return html.Section([
        html.H2([d["title"], " ", html.Span(f"version {d['version']}", className="badge")], id=d["id"]),
        html.Div([html.Strong("Formula: "), html.Code(d["formula"])], className="formula") if d["formula"] else None,
        dcc.Markdown(d["text"], className="doc"),
        html.Table(html.Tbody([html.Tr([html.Th(k), html.Td(html.Code(str(v)))]) for k, v in d["constants"].items()]),
                   className="table", id=f"constants-{d['id']}") if d["constants"] else None,
        _models(d) if d.get("models") else None,
        *[html.Details([html.Summary(f"code: {c['name']}"), html.Pre(c["source"])]) for c in d["code"]],
        *[html.Details([html.Summary(f"SQL: {s['name']}"), html.Pre(s["source"])]) for s in d["sql"]],
    ], className="definition", id=f"definition-{d['id']}")


def _models(d) -> html.Details:
    """The proof of GPU's work per model of the reference table (fleetscope.proof.size_for)."""
    columns = (("model", "model"), ("fp16_tensor_tflops", "FP16 tensor TFLOPS"), ("memory_gib", "GiB"),
               ("n", "n"), ("k", "k"), ("tflop", "work (TFLOP)"), ("budget_s", "deadline (s, + round trip)"))
    return html.Details([
        html.Summary(f"work per model ({len(d['models'])} models in the reference table)"),
        html.Table([html.Thead(html.Tr([html.Th(label) for _, label in columns])),
                    html.Tbody([html.Tr([html.Td(_cell(key, m[key]),
                                                 className="num" if key != "model" else None)
                                         for key, _ in columns]) for m in d["models"]])],
                   className="table", id=f"models-{d['id']}"),
    ])


def _cell(key: str, value) -> str:
    if key == "budget_s":
        return f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


dash.register_page(__name__, path="/methodology", name="Methodology", title="fleetscope · methodology", layout=layout)
