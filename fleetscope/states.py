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


# A GPU claim's last_seen (gpus.last_seen) is refreshed at least this often
# while its node keeps reporting the same identity (the writer re-upserts an
# unchanged identity this often): a claim last seen longer ago than a few
# refreshes is no longer reported. duplicate_uuid's window follows from it.
IDENTITY_REFRESH_S = 300


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
# at or before {at}.
NODE_ONLINE_SQL = "({last_ok} IS NOT NULL AND {last_ok} > {at} - make_interval(secs => {grace_s}))"

# A node's latest successful observation at or before %(at)s, NULL when it has
# none: a scalar subquery on the node id expression {node_id}. The explorer's
# "last seen", the operator view and the alert loop's first round all use it,
# so they cannot disagree.
#
# Why not a backwards read of the (node_id, time) index: a dead node collects
# a failed observation per scrape, and no index holds only the successful
# ones (migration 0006 dropped it for the writer's sake), so that read passes
# every failure since. Instead: the current hour up to %(at)s, else the latest
# earlier hour that the hourly rollup (node_hourly, fleetscope/rollups.py)
# says has a successful slot, each a bounded range of that index. For 240
# nodes, 200 of them dead two days with a failure every 15 s: 210 ms as a
# backwards read, 17-25 ms this way. That assumes the rollup is kept (the
# collector's maintenance loop): plain mode aggregates the hours above its
# watermark from raw rows at query time, and where it was never refreshed the
# same probe took 1.0 s.
#
# Caveat, rows replayed late: until the rollup recomputes an hour that got
# successful rows after it was materialised (plain mode: the next refresh
# after the writer's invalidate; TimescaleDB: its refresh policy), the rollup
# does not name that hour, so the result can be an earlier success, or NULL
# for a node whose only successes were replayed; never a later one. The
# current hour, and an hour the rollup already counts as successful, are
# always read raw.
LAST_OK_SQL = """coalesce(
    (SELECT max(ob.time) FROM observations ob
      WHERE ob.node_id = {node_id} AND ob.ok
        AND ob.time >= time_bucket('1 hour', %(at)s::timestamptz) AND ob.time <= %(at)s),
    (SELECT max(ob.time)
       FROM (SELECT h.bucket FROM node_hourly h
              WHERE h.node_id = {node_id} AND h.ok_slots > 0
                AND h.bucket < time_bucket('1 hour', %(at)s::timestamptz)
              ORDER BY h.bucket DESC LIMIT 1) lb
       JOIN observations ob ON ob.node_id = {node_id} AND ob.ok
                           AND ob.time >= lb.bucket AND ob.time < lb.bucket + interval '1 hour'))"""

# Nodes whose grace is at most this are judged from one range scan over the
# last max(grace) seconds of observations; the rare node with a longer grace
# gets its own index probe. Both give the same answer (online needs an ok
# observation within the grace), but the range scan costs a few rows per node
# where 10,000 probes cost ~120 ms (bench/bench_snapshot.py).
RANGE_SCAN_MAX_GRACE_S = 600

# Each node registered by %(at)s with: last_ok, its latest successful
# observation at or before %(at)s (for nodes judged by the range scan: the
# latest within it, NULL when there is none, which is exactly when it is
# offline); online; and the GPU set in force at last_ok (node_gpu_sets holds a
# row per change).
NODE_STATE_SQL = """
WITH recent AS (
    SELECT o.node_id, max(o.time) AS last_ok
      FROM observations o
     WHERE o.ok AND o.time <= %(at)s
       AND o.time > %(at)s - make_interval(secs => (
               SELECT coalesce(max(grace_s), 0) FROM nodes WHERE grace_s <= {fast}))
     GROUP BY o.node_id
), latest AS (
    SELECT n.node_id, n.grace_s, coalesce(r.last_ok, lo.time) AS last_ok
      FROM nodes n
      LEFT JOIN recent r ON r.node_id = n.node_id AND n.grace_s <= {fast}
      LEFT JOIN LATERAL (
            SELECT o.time FROM observations o
             WHERE n.grace_s > {fast} AND o.node_id = n.node_id AND o.ok AND o.time <= %(at)s
             ORDER BY o.time DESC LIMIT 1) lo ON true
     WHERE n.registered_at <= %(at)s
), sets AS (
    SELECT DISTINCT ON (s.node_id) s.node_id, s.healthy, s.lost
      FROM node_gpu_sets s JOIN latest l ON l.node_id = s.node_id AND s.since <= l.last_ok
     ORDER BY s.node_id, s.since DESC
)
SELECT l.node_id, l.grace_s, l.last_ok, {online} AS online, sets.healthy, sets.lost
  FROM latest l LEFT JOIN sets USING (node_id)
""".format(fast=RANGE_SCAN_MAX_GRACE_S,
           online=NODE_ONLINE_SQL.format(last_ok="l.last_ok", at="%(at)s", grace_s="l.grace_s"))
