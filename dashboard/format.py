"""How numbers read on the pages: thousands separators, fixed decimals, units beside them.

The element that shows a number also carries the exact value in
``data-value`` (what the API returns), so a reader or a test can check the
rounded text against the exact number.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from dash import html

from fleetscope.times import format_time


def integer(value: int) -> str:
    return f"{value:,}"


def hours(value: float) -> str:
    return f"{value:,.1f}"


def usd(value: float) -> str:
    return f"{value:,.2f}"


def tflops(value: float) -> str:
    """Implied TFLOPS to three significant figures: a real H100's hundreds, a simulated host's millionths."""
    return f"{value:,.1f}" if value >= 100 else f"{value:.3g}"


def percent(ratio: float | None) -> str:
    return "no data" if ratio is None else f"{100 * ratio:.2f} %"


def when(value: str | datetime | None, *, zone: bool = True) -> str:
    """A time as the pages print it: UTC, to the second, "2026-12-03 15:10:56 UTC".

    ``zone=False`` leaves out " UTC" (grids say it once, in the header).
    """
    if value is None:
        return "never"
    if isinstance(value, datetime):
        value = format_time(value.replace(microsecond=0))
    return value.split(".")[0].rstrip("Z").replace("T", " ") + (" UTC" if zone else "")



def evidence(value: Any) -> str:
    """Evidence in one readable line: ``key: value`` pairs, nested values as compact JSON."""
    if not isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    parts = []
    for key, item in sorted(value.items()):
        text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, separators=(", ", ": "))
        parts.append(f"{key.replace('_', ' ')}: {text}")
    return " · ".join(parts)


def number(element_id: str, value: Any, text: str, **kwargs) -> html.Span:
    """A number's element: rounded text, exact value in data-value."""
    return html.Span(text, id=element_id, className="num", **{"data-value": str(value)}, **kwargs)


_ID = re.compile(r"[0-9]{1,18}")


def parse_id(text: str) -> int | None:
    """A node or snapshot id from a URL, or None: ASCII digits only ('²'.isdigit() is True)."""
    return int(text) if _ID.fullmatch(text or "") else None


def markdown_text(text: str) -> str:
    """Operators' own text (node names) made literal for a Markdown cell: no links or images of theirs."""
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!<>|" else c for c in text)
