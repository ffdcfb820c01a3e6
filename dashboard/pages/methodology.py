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
                   className="table") if d["constants"] else None,
        *[html.Details([html.Summary(f"code: {c['name']}"), html.Pre(c["source"])]) for c in d["code"]],
        *[html.Details([html.Summary(f"SQL: {s['name']}"), html.Pre(s["source"])]) for s in d["sql"]],
    ], className="definition", id=f"definition-{d['id']}")


dash.register_page(__name__, path="/methodology", name="Methodology", title="fleetscope · methodology", layout=layout)
