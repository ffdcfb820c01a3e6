"""identity_change: a node's set of GPU UUIDs changes without re-registration (DESIGN.md, Integrity).

A node's GPUs are the UUIDs in its GPU sets (node_gpu_sets: a row each time
the set changes), healthy or lost: a GPU that falls off the bus and is
reported lost is the same hardware, not a change. A UUID that appears in or
disappears from a node that already had a set is a change. fleetscope has no
way to re-register an existing node (new hardware is a new node, with a
history of its own), so every such change is a finding on the node as a
whole, which flags all its GPUs, and it resolves once the set has stayed the
same for ``window``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fleetscope.integrity.findings import Found
from fleetscope.times import format_time

if TYPE_CHECKING:
    import psycopg

KIND = "identity_change"
RESOLUTION = "the node's GPU set has not changed for the whole window since"
# A day: long enough that an operator swapping cards shows on the public page
# for a whole day's reputation window (U1), short enough to clear afterwards.
DEFAULT_WINDOW = timedelta(hours=24)

# Per node, each set with the one before it, as sorted arrays of UUIDs
# (healthy and lost together); the latest change within the window.
FIND_SQL = """
WITH sets AS (
    SELECT node_id, since,
           ARRAY(SELECT DISTINCT u FROM unnest(healthy || lost) u ORDER BY u) AS uuids
      FROM node_gpu_sets WHERE since <= %(at)s
), paired AS (
    SELECT node_id, since, uuids, lag(uuids) OVER (PARTITION BY node_id ORDER BY since) AS before
      FROM sets
)
SELECT DISTINCT ON (node_id) node_id, since,
       ARRAY(SELECT unnest(uuids) EXCEPT SELECT unnest(before) ORDER BY 1) AS added,
       ARRAY(SELECT unnest(before) EXCEPT SELECT unnest(uuids) ORDER BY 1) AS removed
  FROM paired
 WHERE before IS NOT NULL AND uuids <> before AND since > %(since)s
 ORDER BY node_id, since DESC
"""


def find(conn: psycopg.Connection, *, at: datetime, window: timedelta = DEFAULT_WINDOW) -> list[Found]:
    """Every node whose GPU UUID set changed within ``window`` before ``at``, with its latest change."""
    rows = conn.execute(FIND_SQL, {"at": at, "since": at - window}).fetchall()
    return [Found(node_id=n, evidence={"at": format_time(since), "added": added, "removed": removed,
                                       "window_s": int(window.total_seconds())})
            for n, since, added, removed in rows]
