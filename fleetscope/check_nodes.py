"""The nodes behind a failing consistency check (issue 16: a failed check links to its nodes).

The snapshot's checks (fleetscope/snapshot.py, CHECKS) say whether a rule
holds for the whole fleet; for the two rules that a node breaks, this finds
which nodes, by the same definitions at the same as-of time:

- no_hired_offline: the nodes with a GPU claim covered by a running job
  while offline (the GPU table's own per-claim states: explorer.GPU_CLAIMS_SQL);
- hired_hours_within_online_hours: the nodes whose hired GPU-hours over the
  check's window exceed their online GPU-hours (the check's own statement).

The other checks are about the fleet's totals; they name no node.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from fleetscope import accounting
from fleetscope.explorer import GPU_CLAIMS_SQL
from fleetscope.rollups import floor_bucket, node_hourly_sql
from fleetscope.snapshot import HIRED_VS_ONLINE_SQL, LAST_24H

if TYPE_CHECKING:
    import psycopg

NODE_CHECKS = ("no_hired_offline", "hired_hours_within_online_hours")
LIMIT = 50


def nodes_behind(conn: psycopg.Connection, name: str, *, at: datetime, mode: str, limit: int = LIMIT
                 ) -> list[dict]:
    """Up to ``limit`` nodes that break check ``name`` at ``at``: [{node_id, name, detail}]; [] for fleet-wide checks."""
    at = at.astimezone(timezone.utc)
    if name == "no_hired_offline":
        rows = conn.execute(
            f"SELECT c.node_id, n.name, count(*) FROM ({GPU_CLAIMS_SQL}) c JOIN nodes n USING (node_id)"
            " WHERE c.covered AND NOT c.gpu_online GROUP BY c.node_id, n.name ORDER BY c.node_id LIMIT %(limit)s",
            {"at": at, "limit": limit}).fetchall()
        return [{"node_id": r[0], "name": r[1], "detail": f"{r[2]} GPUs hired while offline"} for r in rows]
    if name == "hired_hours_within_online_hours":
        we = floor_bucket(at)
        hired_sql = accounting.NODE_WINDOW_SQL.replace("%(start)s", "%(ws)s").replace("%(end)s", "%(we)s")
        rows = conn.execute(
            f"SELECT o.*, n.name FROM ({HIRED_VS_ONLINE_SQL.format(hired=hired_sql, rollup=node_hourly_sql(mode))})"
            " AS o(node_id, hired, online) JOIN nodes n USING (node_id) ORDER BY node_id LIMIT %(limit)s",
            {"at": at, "ws": we - LAST_24H, "we": we, "limit": limit}).fetchall()
        return [{"node_id": r[0], "name": r[3], "detail": f"hired {r[1]} > online {r[2]} GPU-h"} for r in rows]
    return []
