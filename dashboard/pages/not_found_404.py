"""Any unknown path: a page that says so (the server also answers 404: dashboard/app.py)."""

from __future__ import annotations

import dash
from dash import dcc, html



def layout(**_kwargs):
    return html.Div([html.H1("Page not found", id="page-not-found"),
                     html.P(["Nothing lives at this address. ", dcc.Link("Back to the overview", href="/")])])


dash.register_page(__name__, path="/404", name="Not found", title="fleetscope · not found", layout=layout)
