"""The explorer's charts (Plotly), built from the series fleetscope/series.py defines.

Pages call these with the objects the JSON API returns (dashboard/service.py),
so a chart and its JSON are the same numbers. The rules every chart follows
(issue 16, "charts people read at a glance"):

- time axes say dates and times a person reads ("14:00", "Tue 01 Dec"), never
  "09:29:59.9996"; value axes say their unit and use round ticks;
- hovering shows the exact value with its unit;
- fleet jumps (the fleet_jump findings) are dotted lines with what jumped, our
  own outages (no collector heartbeat: uptime leaves them out) grey bands,
  and simulated history a labelled band;
- an empty series says so in words instead of drawing empty axes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fleetscope.times import parse_time

COLOURS = {"registered": "#8c959f", "online": "#1a7f37", "hired": "#0969da", "idle": "#54aeff",
           "offline": "#d0d7de", "flagged": "#cf222e", "warn": "#bf8700", "revenue": "#1a7f37",
           "outage": "rgba(110, 119, 129, 0.18)", "simulated": "rgba(191, 135, 0, 0.07)"}
FONT = {"family": "Inter, system-ui, -apple-system, Segoe UI, sans-serif", "size": 12}
# Tick labels per range: times of day over a day, dates beyond.
TICKS = {"24h": "%H:%M<br>%d %b", "7d": "%a %d %b", "30d": "%d %b"}
TICKS_HALF = {"24h": "%H:%M", "7d": "%d %b", "30d": "%d %b"}
HOVER_TIME = {"24h": "%d %b %H:%M UTC", "7d": "%a %d %b %H:%M UTC", "30d": "%a %d %b %Y %H:%M UTC"}
# After an outage, nodes are seen again within one interval and a grace: points this soon after are not judged.
OUTAGE_SETTLE = timedelta(minutes=5)
CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"]}


def _layout(fig: go.Figure, *, height: int, rng: str, y_title: str = "", y_format: str = ",d",
            y_range: list | None = None, half: bool = False) -> go.Figure:
    """The common look; ``half``: a chart in half the page's width (fewer, shorter time ticks, never slanted)."""
    fig.update_layout(template="plotly_white", height=height, font=FONT, hovermode="x unified",
                      margin={"l": 60, "r": 20, "t": 30, "b": 50},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
                      hoverlabel={"font": FONT})
    fig.update_xaxes(type="date", tickformat=(TICKS_HALF if half else TICKS).get(rng, TICKS["7d"]),
                     hoverformat=HOVER_TIME.get(rng), showgrid=False, nticks=5 if half else 8, tickangle=0)
    fig.update_yaxes(title_text=y_title, tickformat=y_format, rangemode="tozero", nticks=6, zeroline=True,
                     zerolinecolor="#d0d7de", **({"range": y_range} if y_range else {}))
    return fig


def empty(message: str, *, height: int = 260) -> go.Figure:
    """A chart with nothing to draw: the reason, in words, and no axes."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={**FONT, "size": 14, "color": "#57606a"})
    fig.update_layout(template="plotly_white", height=height, xaxis={"visible": False}, yaxis={"visible": False},
                      margin={"l": 20, "r": 20, "t": 20, "b": 20})
    return fig


def annotate(fig: go.Figure, annotations: dict[str, list], simulated: list[dict], *, since: str, until: str,
             jumps: bool = True) -> None:
    """Mark simulated history, our outages and (on fleet charts) fleet jumps on ``fig``."""
    for span in simulated:
        x0, x1 = max(parse_time(span["started_at"]), parse_time(since)), min(parse_time(span["ended_at"]), parse_time(until))
        if x1 > x0:
            fig.add_vrect(x0=x0, x1=x1, fillcolor=COLOURS["simulated"], line_width=0, layer="below",
                          annotation_text="simulated history", annotation_position="top left",
                          annotation_font={**FONT, "size": 10, "color": COLOURS["warn"]})
    for outage in annotations.get("outages", []):
        fig.add_vrect(x0=parse_time(outage["start"]), x1=parse_time(outage["end"]), fillcolor=COLOURS["outage"], line_width=0,
                      layer="below", annotation_text=f"our outage ({outage['minutes']:g} min)",
                      annotation_position="top right", annotation_font={**FONT, "size": 10, "color": "#57606a"})
    if jumps:
        seen = set()
        for jump in annotations.get("fleet_jumps", []):
            at = parse_time(jump["at"])
            fig.add_vline(x=at, line={"color": COLOURS["flagged"], "dash": "dot", "width": 1.5})
            if at in seen:
                continue  # one label per event (registered and online often jump together)
            seen.add(at)
            change = (jump["after"] or 0) - (jump["before"] or 0)
            fig.add_annotation(x=at, y=0.98, yref="paper", showarrow=False, xanchor="left", yanchor="top",
                               text=f" fleet jump: {change:+,} {jump['metric']} GPUs",
                               font={**FONT, "size": 11, "color": COLOURS["flagged"]}, bgcolor="rgba(255,255,255,0.8)")


def fleet_figure(data: dict[str, Any]) -> go.Figure:
    """Registered, online and hired GPUs at each point: the snapshot's own counts."""
    points = data["points"]
    if len(points) < 2:
        return empty("Not enough history yet: the fleet's first points appear within minutes.")
    x = [parse_time(p["as_of"]) for p in points]
    # While we were not observing, the counts say only that nobody was seen:
    # the line breaks there (the grey band says why) instead of diving to 0.
    blind = [(parse_time(o["start"]), parse_time(o["end"]) + OUTAGE_SETTLE) for o in data["annotations"].get("outages", [])]
    gap = [any(lo <= t <= hi for lo, hi in blind) for t in x]
    fig = go.Figure()
    for key in ("registered", "online", "hired"):
        fig.add_trace(go.Scatter(x=x, y=[None if g else p["gpus"][key] for p, g in zip(points, gap)],
                                 name=f"{key} GPUs", mode="lines", connectgaps=False,
                                 line={"color": COLOURS[key], "width": 2, "shape": "hv"},
                                 hovertemplate="%{y:,d} GPUs"))
    annotate(fig, data["annotations"], data["simulated"], since=data["since"], until=data["as_of"])
    return _layout(fig, height=320, rng=data["range"], y_title="GPUs")


def money_figure(data: dict[str, Any]) -> go.Figure:
    """GPU-hours (top) and accrued revenue (bottom) per bucket, each on its own axis with its unit."""
    money = data["money"]
    if not money or not any(m["gpu_hours"] for m in money):
        return empty("No GPU-hours in this range: no job ran on the fleet.")
    x = [parse_time(m["start"]) + (parse_time(m["end"]) - parse_time(m["start"])) / 2 for m in money]
    width = [(parse_time(m["end"]) - parse_time(m["start"])).total_seconds() * 1000 * 0.85 for m in money]
    label = ["so far" if m["partial"] else "" for m in money]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    fig.add_trace(go.Bar(x=x, y=[m["gpu_hours"] for m in money], width=width, name="GPU-hours",
                         marker={"color": COLOURS["hired"]}, customdata=label,
                         hovertemplate="%{y:,.1f} GPU-h %{customdata}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=[m["revenue_usd"] for m in money], width=width, name="revenue (USD)",
                         marker={"color": COLOURS["revenue"]}, customdata=label,
                         hovertemplate="$%{y:,.2f} %{customdata}<extra></extra>"), row=2, col=1)
    _layout(fig, height=340, rng=data["range"], half=True)
    fig.update_yaxes(title_text="GPU-h", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(title_text="USD", tickformat="$,.0f", row=2, col=1)
    fig.update_layout(showlegend=False, bargap=0.1)
    return fig


def models_figure(by_model: list[dict[str, Any]]) -> go.Figure:
    """Per GPU model: hired, idle (online, not hired) and offline GPUs, stacked, largest model on top."""
    if not by_model:
        return empty("No GPUs registered yet.")
    models = sorted(by_model, key=lambda m: m["registered"])
    names = [m["model"].replace("NVIDIA ", "") for m in models]
    parts = (("hired", [m["hired"] for m in models]), ("idle", [m["online"] - m["hired"] for m in models]),
             ("offline", [m["registered"] - m["online"] for m in models]))
    fig = go.Figure([go.Bar(y=names, x=values, name=key, orientation="h", marker={"color": COLOURS[key]},
                            customdata=[m["registered"] for m in models],
                            hovertemplate=f"%{{x:,d}} {key} of %{{customdata:,d}} GPUs<extra>%{{y}}</extra>")
                     for key, values in parts])
    fig.update_layout(template="plotly_white", barmode="stack", font=FONT, height=60 + 34 * len(models),
                      margin={"l": 10, "r": 20, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
                      xaxis={"title": "GPUs", "tickformat": ",d", "rangemode": "tozero"},
                      yaxis={"automargin": True})
    return fig


def uptime_figure(data: dict[str, Any]) -> go.Figure:
    """The node's uptime per bar (green at 99 % and above, amber from 90 %, red below; grey: not judged)."""
    bars = data["uptime"]
    if not bars:
        return empty("No uptime yet: the node has not been registered for a whole bar.", height=220)
    x = [parse_time(b["start"]) + (parse_time(b["end"]) - parse_time(b["start"])) / 2 for b in bars]
    width = [(parse_time(b["end"]) - parse_time(b["start"])).total_seconds() * 1000 * 0.8 for b in bars]
    y = [b["ratio"] if b["ratio"] is not None else 1.0 for b in bars]
    colour = [("#d0d7de" if b["ratio"] is None else COLOURS["online"] if b["ratio"] >= 0.99
               else COLOURS["warn"] if b["ratio"] >= 0.9 else COLOURS["flagged"]) for b in bars]
    text = [("not judged: fleetscope was not observing" if b["ratio"] is None
             else f"{b['ratio']:.1%} ({b['ok_slots']:,} of {b['observed_slots']:,} slots seen)") for b in bars]
    fig = go.Figure(go.Bar(x=x, y=y, width=width, marker={"color": colour}, customdata=text, name="uptime",
                           hovertemplate="%{customdata}<extra></extra>"))
    annotate(fig, data["annotations"], data["simulated"], since=data["since"], until=data["as_of"], jumps=False)
    _layout(fig, height=220, rng=data["range"], y_title="uptime", y_format=".0%", y_range=[0, 1.05])
    fig.update_layout(showlegend=False, hovermode="closest")
    return fig


def utilisation_figure(data: dict[str, Any]) -> go.Figure:
    """Each GPU's utilisation, mean per step (the step in the title), 0 to 100 %."""
    gpus = data["telemetry"]
    if not any(len(s["time"]) for s in gpus.values()):
        return empty("No GPU telemetry in this range.", height=260)
    fig = go.Figure()
    for uuid, s in sorted(gpus.items()):
        # No legend (eight GPUs' entries crowd the plot): the hover names each GPU by its UUID.
        fig.add_trace(go.Scatter(x=[parse_time(t) for t in s["time"]], y=s["gpu_util"], mode="lines", name=uuid[:13] + "…",
                                 line={"width": 1.5}, hovertemplate="%{y:.1f} %"))
    annotate(fig, data["annotations"], data["simulated"], since=data["since"], until=data["as_of"], jumps=False)
    _layout(fig, height=280, rng=data["range"], y_title="utilisation", y_format="d", y_range=[0, 105], half=True)
    fig.update_yaxes(ticksuffix=" %")
    fig.update_layout(showlegend=False, margin={"l": 60, "r": 20, "t": 20, "b": 50})
    return fig


def reputation_figure(data: dict[str, Any]) -> go.Figure:
    """The node's reputation at each point, with its inputs on hover."""
    points = data["reputation"]
    if not points:
        return empty("No reputation yet.", height=240)
    text = [f"V {p['V']}, U7 {_pct(p['U7'])}, U1 {_pct(p['U1'])}, J {p['J']:.3f}" for p in points]
    fig = go.Figure(go.Scatter(x=[parse_time(p["at"]) for p in points], y=[p["score"] for p in points], mode="lines+markers",
                               line={"color": COLOURS["hired"], "width": 2}, marker={"size": 5}, customdata=text,
                               name="reputation", hovertemplate="%{y:.1f} / 100 (%{customdata})<extra></extra>"))
    annotate(fig, data["annotations"], data["simulated"], since=data["since"], until=data["as_of"], jumps=False)
    _layout(fig, height=280, rng=data["range"], y_title="reputation", y_format="d", y_range=[0, 105], half=True)
    fig.update_layout(showlegend=False)
    return fig


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def span_text(simulated: list[dict[str, Any]]) -> str:
    """The banner's words for the simulated spans in view."""
    spans = "; ".join(f"{parse_time(s['started_at']):%d %b %H:%M} to {parse_time(s['ended_at']):%d %b %H:%M} UTC" for s in simulated)
    return (f"Simulated history: from {spans} this fleet's data (observations, telemetry, jobs, the fleet jump "
            "and incidents) was written by the demo's simulator before fleetscope started, not observed; charts "
            "shade it, and the totals include its jobs. Everything after it is live. Proofs of GPU are never "
            "simulated: GPUs are unverified until their first real proof.")


def duration(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"
