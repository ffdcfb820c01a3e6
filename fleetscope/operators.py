"""The operator view: one operator's nodes, their states, uptime and alert history.

Read by the collector's ``GET /api/v1/operator`` (operator token) and by the
dashboard's operator page. Nothing here is a new definition: the state is
``fleetscope.states.node_status`` / ``node_online`` (the public snapshot's
definition) on each node's latest ok observation at ``at``
(``states.LAST_OK_SQL``, as the explorer's "last seen"), and uptime is
``fleetscope.uptime.uptime``. Only the given operator's rows are read; the
caller establishes who the operator is (a token), never a request parameter.

Both callers (the collector's endpoint and /operator) pass the current time,
not the explorer's snapshot tick: the state is then what the alert loop
judges by (the same ``node_status`` on the node's latest report), so the view
never lags an alert already sent (issue 16). ``paused`` silences alerts only
(``fleetscope.registry.set_paused``): it changes no state, count or uptime.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from fleetscope.states import DEFINITION_VERSION, LAST_OK_SQL, node_online, node_status
from fleetscope.uptime import uptime
from fleetscope.times import format_optional

if TYPE_CHECKING:
    import psycopg

# Alert history shown: the latest attempts; older ones stay in the database.
ALERT_HISTORY_LIMIT = 50
UPTIME_WINDOWS = {"uptime_24h": timedelta(hours=24), "uptime_7d": timedelta(days=7)}

OPERATOR_SQL = "SELECT name FROM operators WHERE operator_id = %s"
# Each node's latest ok observation at or before %(at)s (states.LAST_OK_SQL,
# as the explorer's "last seen"): bounded index ranges per node, however long
# a node has been failing.
NODES_SQL = """
SELECT n.node_id, n.name, n.scrape_url, n.interval_s, n.grace_s, n.paused, n.registered_at,
       {last_ok} AS last_ok,
       s.status AS alert_status, s.since AS alert_since, s.muted_until
  FROM nodes n LEFT JOIN alert_state s USING (node_id)
 WHERE n.operator_id = %(operator_id)s AND n.registered_at <= %(at)s
 ORDER BY n.name, n.node_id
""".format(last_ok=LAST_OK_SQL.format(node_id="n.node_id"))
CHANNELS_SQL = ("SELECT channel_id, kind, target, created_at FROM alert_channels"
                " WHERE operator_id = %s ORDER BY channel_id")
HISTORY_SQL = """
SELECT d.delivery_id, d.attempted_at, d.node_id, n.name, d.event, d.channel_id, d.kind, d.attempt, d.ok, d.error,
       d.payload ->> 'since' AS since
  FROM alert_deliveries d JOIN nodes n USING (node_id)
 WHERE n.operator_id = %s AND d.attempted_at <= %s
 ORDER BY d.attempted_at DESC, d.delivery_id DESC
 LIMIT %s
"""


def operator_view(conn: psycopg.Connection, operator_id: int, *, at: datetime,
                  history_limit: int = ALERT_HISTORY_LIMIT) -> dict[str, Any] | None:
    """The view of operator ``operator_id`` at ``at``, or None when there is no such operator.

    Returns ``{"operator_id", "operator", "as_of", "definition_version",
    "nodes": [{node_id, name, state (new|up|late|down), online, last_ok_at,
    interval_s, grace_s, paused, scrape_url, uptime_24h, uptime_7d,
    alert_status, alert_since, muted_until}], "channels": [...],
    "alerts": [latest delivery attempts, newest first]}``. Uptimes are ratios
    in [0, 1], or None when no slot of the window could be judged.
    """
    row = conn.execute(OPERATOR_SQL, (operator_id,)).fetchone()
    if row is None:
        return None
    nodes = []
    cur = conn.execute(NODES_SQL, {"operator_id": operator_id, "at": at})
    names = [d.name for d in cur.description]
    for values in cur.fetchall():
        n = dict(zip(names, values))
        node = {
            "node_id": n["node_id"], "name": n["name"],
            "state": str(node_status(last_ok=n["last_ok"], interval_s=n["interval_s"], grace_s=n["grace_s"], at=at)),
            "online": node_online(last_ok=n["last_ok"], grace_s=n["grace_s"], at=at),
            "last_ok_at": format_optional(n["last_ok"]), "interval_s": n["interval_s"], "grace_s": n["grace_s"],
            "paused": n["paused"], "scrape_url": n["scrape_url"], "registered_at": format_optional(n["registered_at"]),
        }
        for key, window in UPTIME_WINDOWS.items():
            up = uptime(conn, n["node_id"], start=at - window, end=at)
            node[key] = up.ratio if up is not None else None
        node.update(alert_status=n["alert_status"], alert_since=format_optional(n["alert_since"]),
                    muted_until=format_optional(n["muted_until"]))
        nodes.append(node)
    channels = [{"channel_id": c[0], "kind": c[1], "target": c[2], "created_at": format_optional(c[3])}
                for c in conn.execute(CHANNELS_SQL, (operator_id,)).fetchall()]
    alerts = [{"delivery_id": a[0], "attempted_at": format_optional(a[1]), "node_id": a[2], "name": a[3], "event": a[4],
               "channel_id": a[5], "kind": a[6], "attempt": a[7], "ok": a[8], "error": a[9], "since": a[10]}
              for a in conn.execute(HISTORY_SQL, (operator_id, at, history_limit)).fetchall()]
    return {"operator_id": operator_id, "operator": row[0], "as_of": format_optional(at),
            "definition_version": DEFINITION_VERSION, "nodes": nodes, "channels": channels, "alerts": alerts}


def operator_view_from_dsn(dsn: str, operator_id: int, *, at: datetime | None = None) -> dict[str, Any] | None:
    """``operator_view`` on a connection of its own (for callers in a worker thread)."""
    from fleetscope.db import connect

    with connect(dsn, autocommit=True) as conn:
        return operator_view(conn, operator_id, at=at or datetime.now(timezone.utc))
