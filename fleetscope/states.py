"""Node and GPU states: the definitions (DESIGN.md, Definitions).

Each definition is a small pure function with the SQL that computes the same
thing beside it; the snapshot and the pages use the SQL, the alert loop and
tests the function, and tests hold the two to the same boundaries.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

DEFINITION_VERSION = 1
DEFAULT_INTERVAL_S = 15
# Three missed intervals: one late scrape or push is noise, three are an outage.
GRACE_INTERVALS = 3


class NodeStatus(StrEnum):
    NEW = "new"    # registered, never successfully observed: offline
    UP = "up"      # a successful observation within the last interval: online
    LATE = "late"  # none within the interval, one within the grace: still online
    DOWN = "down"  # none within the grace: offline


def default_grace_s(interval_s: int) -> int:
    """The grace period of a node registered without one: 3 x its interval."""
    return GRACE_INTERVALS * interval_s


def node_status(*, last_ok: datetime | None, interval_s: int, grace_s: int, at: datetime) -> NodeStatus:
    """The state of a node at time ``at``, given its latest successful observation at or before ``at``.

    Online at t means a successful observation in (t - grace, t]: a node last
    seen exactly ``grace_s`` ago is already down.
    """
    if last_ok is None:
        return NodeStatus.NEW
    if last_ok > at - timedelta(seconds=interval_s):
        return NodeStatus.UP
    if last_ok > at - timedelta(seconds=grace_s):
        return NodeStatus.LATE
    return NodeStatus.DOWN


def node_online(*, last_ok: datetime | None, grace_s: int, at: datetime) -> bool:
    """Whether a node is online at ``at``: a successful observation in (at - grace, at]."""
    return last_ok is not None and at - timedelta(seconds=grace_s) < last_ok <= at


# The same predicate in SQL. {last_ok}: the latest successful observation time
# at or before {at} (the lateral join in LATEST_OK_SQL guarantees <= at).
NODE_ONLINE_SQL = "({last_ok} IS NOT NULL AND {last_ok} > {at} - make_interval(secs => {grace_s}))"

# The latest successful observation of each node at or before %(at)s, and the
# GPU set in force at that observation (node_gpu_sets: a row per change).
LATEST_OK_SQL = """
SELECT n.node_id, n.operator_id, n.name, n.interval_s, n.grace_s, n.registered_at,
       lo.time AS last_ok, gs.healthy, gs.lost
  FROM nodes n
  LEFT JOIN LATERAL (
        SELECT o.time FROM observations o
         WHERE o.node_id = n.node_id AND o.ok AND o.time <= %(at)s
         ORDER BY o.time DESC LIMIT 1) lo ON true
  LEFT JOIN LATERAL (
        SELECT s.healthy, s.lost FROM node_gpu_sets s
         WHERE s.node_id = n.node_id AND s.since <= lo.time
         ORDER BY s.since DESC LIMIT 1) gs ON true
 WHERE n.registered_at <= %(at)s
"""
