"""duplicate_uuid: one GPU UUID reported by two or more nodes in the same liveness window (DESIGN.md, Integrity).

A UUID is burnt into the GPU; two nodes reporting it at once means one of
them copies another's identity. Every claim is a finding (fleetscope cannot
tell the original from the copy, and counts the UUID once either way). It
resolves when fewer than two nodes have reported the UUID within the window.
Only claims already marked ``shared`` (by the gpus_mark_shared trigger) are
read, so the check costs next to nothing on a fleet without copies.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fleetscope.integrity.findings import Found

if TYPE_CHECKING:
    import psycopg

KIND = "duplicate_uuid"
RESOLUTION = "the UUID is no longer reported by more than one node"
# The writer refreshes an unchanged identity's last_seen every 5 minutes
# (collector/builder.py, IDENTITY_REFRESH_S): three refreshes' worth is "at the
# same time" without missing a claim between two refreshes.
DEFAULT_WINDOW = timedelta(minutes=15)

FIND_SQL = """
WITH recent AS (
    SELECT node_id, gpu_uuid FROM gpus
     WHERE shared AND first_seen <= %(at)s AND last_seen > %(since)s
), dup AS (
    SELECT gpu_uuid, array_agg(node_id ORDER BY node_id) AS nodes FROM recent
     GROUP BY gpu_uuid HAVING count(*) > 1
)
SELECT r.node_id, r.gpu_uuid, d.nodes FROM recent r JOIN dup d USING (gpu_uuid)
 ORDER BY r.gpu_uuid, r.node_id
"""


def find(conn: psycopg.Connection, *, at: datetime, window: timedelta = DEFAULT_WINDOW) -> list[Found]:
    """Every claim of a UUID that two or more nodes reported within ``window`` before ``at``."""
    rows = conn.execute(FIND_SQL, {"at": at, "since": at - window}).fetchall()
    return [Found(node_id=n, gpu_uuid=u, evidence={"nodes": nodes, "window_s": int(window.total_seconds())})
            for n, u, nodes in rows]
