"""The dashboard's app factory: the Dash pages and the JSON API on one Flask server."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import dash
import flask
import psycopg
from dash import dcc, html
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

from dashboard.api import api, database_unavailable
from dashboard.api import error as _json_error
from dashboard.format import parse_id
from dashboard.service import Service

PAGES = ("overview", "nodes", "node", "integrity", "methodology", "operator", "not_found_404")
PAGE_PATHS = {"/", "/nodes", "/integrity", "/methodology", "/operator"}
NODE_PATH = re.compile(r"^/nodes/([^/]+)/?$")
# Paths Dash and the API serve themselves.
INTERNAL = ("/api/", "/_dash", "/assets/", "/_reload-hash", "/_favicon", "/favicon")
CALLBACK_PATH = "/_dash-update-component"
COMPONENT_SUITES = "/_dash-component-suites/"
log = logging.getLogger("fleetscope.dashboard")
NAV = (("Overview", "/"), ("Nodes & GPUs", "/nodes"), ("Integrity", "/integrity"), ("Methodology", "/methodology"),
       ("Operators", "/operator"))


def service() -> Service:
    """The Service of the app serving the current request (pages and callbacks call this)."""
    return flask.current_app.config["FLEETSCOPE_EXPLORER"]


def create_app(ex: Service) -> dash.Dash:
    server = flask.Flask("fleetscope-dashboard")
    server.config["FLEETSCOPE_EXPLORER"] = ex
    server.register_blueprint(api)
    app = dash.Dash(
        "fleetscope", server=server, use_pages=True, pages_folder="",
        assets_folder=str(Path(__file__).parent / "assets"), title="fleetscope explorer",
        suppress_callback_exceptions=True, update_title=None,
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}])
    # Pages register themselves (dash.register_page) when first imported.
    import importlib

    for name in PAGES:
        importlib.import_module(f"dashboard.pages.{name}")
    app.layout = html.Div([
        html.Header([
            html.A([html.Span("fleet", className="brand-a"), html.Span("scope", className="brand-b")],
                   href="/", className="brand"),
            html.Nav([dcc.Link(label, href=path, className="nav-link") for label, path in NAV]),
            html.Span("public GPU network explorer · read-only · no login", className="tagline"),
        ], className="topbar"),
        html.Main(dash.page_container, className="page"),
        html.Footer([
            "Every number here comes from one definition in fleetscope/ and is recomputable from published data: ",
            dcc.Link("methodology", href="/methodology"), " · ", html.A("JSON API", href="/api/v1/fleet"),
        ], className="footer"),
    ])

    @server.before_request
    def _real_404():
        # Dash answers every path with its page shell and a 200; an unknown
        # page or node must be a real 404 to browsers, crawlers and scripts.
        path = flask.request.path
        if path.startswith("/api/") and flask.request.blueprint != "api":
            return flask.Response('{"error":"not_found","reason":"no such resource"}', status=404,
                                  mimetype="application/json")
        if flask.request.method != "GET" or path.startswith(INTERNAL) or path in PAGE_PATHS:
            return None
        match = NODE_PATH.match(path)
        if match:
            node_id = parse_id(match.group(1))
            if node_id is not None and node_id in ex.tables().node_rows:
                return None
        return flask.Response(app.index(), status=404, mimetype="text/html")

    @server.before_request
    def _callback_body():
        # Dash answers a callback body that names no callback, or is not the
        # shape it sends, with a 500 (issue 15): it is the client's error.
        if flask.request.path != CALLBACK_PATH or flask.request.method != "POST":
            return None
        body = flask.request.get_json(silent=True)
        if (not isinstance(body, dict) or not isinstance(body.get("output"), str)
                or body["output"] not in app.callback_map or not isinstance(body.get("inputs", []), list)):
            return _json_error(400, "bad_callback", "not a callback request of this dashboard")
        return None

    @server.errorhandler(Exception)
    def _errors(err: Exception):
        if isinstance(err, HTTPException):
            return err
        if isinstance(err, (psycopg.OperationalError, PoolTimeout)):  # a database restart, not a bug
            return database_unavailable(err)
        if flask.request.path.startswith(COMPONENT_SUITES):
            # Dash raises for a package or file it does not serve (a traversal
            # attempt among them): not found, not a server error (issue 15).
            return _json_error(404, "not_found", "no such resource")
        if flask.request.path == CALLBACK_PATH:
            log.warning("callback refused: %s", err, exc_info=err)
            return _json_error(400, "bad_callback", "the callback request could not be handled")
        log.exception("%s failed", flask.request.path)
        return _json_error(500, "internal_error", "internal error")

    return app
