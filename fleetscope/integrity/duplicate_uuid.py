"""duplicate_uuid: one GPU UUID reported by two or more nodes in the same liveness window (DESIGN.md, Integrity).

A UUID is burnt into the GPU; two nodes reporting it at once means one of
them copies another's identity. The claim seen first keeps its standing
(issue 16): the node whose claim of the UUID the collector received first
(``gpus.first_seen``, a receive time no host can backdate; ties go to the
node registered first, the lower node id) is the owner, and every later
claimant is a finding. Cloning someone's UUID can therefore never cost the
legitimate owner its verification or reputation, only the cloner.

A cloner's finding names the node as a whole (``gpu_uuid`` NULL, the cloned
UUID in ``subject`` and the evidence): by the flag rule shared by the
snapshot, the explorer, reputation and ``fleetscope verify`` (a finding
naming a UUID flags every claim of it; one naming only a node flags that
node's GPUs) this flags the cloner's GPUs and leaves the owner's alone, and
the one GPU the UUID is counted as in the fleet totals is flagged through the
cloner's claim. The finding resolves when fewer than two nodes have reported
the UUID within the window. Only claims already marked ``shared`` (by the
gpus_mark_shared trigger) are read, so the check costs next to nothing on a
fleet without copies.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fleetscope.integrity.findings import Found
from fleetscope.states import IDENTITY_REFRESH_S

if TYPE_CHECKING:
    import psycopg

KIND = "duplicate_uuid"
RESOLUTION = "the UUID is no longer reported by more than one node"
# The writer refreshes an unchanged identity's last_seen every
# IDENTITY_REFRESH_S (collector/builder.py): three refreshes' worth is "at the
# same time" without missing a claim between two refreshes.
DEFAULT_WINDOW = timedelta(seconds=3 * IDENTITY_REFRESH_S)

# Per duplicated UUID, its claims in the order they were first seen; the
# first is the owner, the rest are the findings.
FIND_SQL = """
WITH recent AS (
    SELECT node_id, gpu_uuid, first_seen FROM gpus
     WHERE shared AND first_seen <= %(at)s AND last_seen > %(since)s
), ranked AS (
    SELECT node_id, gpu_uuid, first_seen,
           row_number() OVER (PARTITION BY gpu_uuid ORDER BY first_seen, node_id) AS rank,
           first_value(node_id) OVER (PARTITION BY gpu_uuid ORDER BY first_seen, node_id) AS owner,
           first_value(first_seen) OVER (PARTITION BY gpu_uuid ORDER BY first_seen, node_id) AS owner_since,
           array_agg(node_id) OVER (PARTITION BY gpu_uuid) AS nodes
      FROM recent
)
SELECT node_id, gpu_uuid, first_seen, owner, owner_since, nodes FROM ranked
 WHERE rank > 1
 ORDER BY gpu_uuid, node_id
"""


def find(conn: psycopg.Connection, *, at: datetime, window: timedelta = DEFAULT_WINDOW) -> list[Found]:
    """Every later claim of a UUID that two or more nodes reported within ``window`` before ``at``.

    The first claim (earliest ``first_seen``, then lowest node id) is not a
    finding; each later claimant is one, naming its node with the UUID as subject.
    """
    rows = conn.execute(FIND_SQL, {"at": at, "since": at - window}).fetchall()
    return [Found(node_id=n, subject=u,
                  evidence={"gpu_uuid": u, "nodes": sorted(nodes), "first_claimed_by": owner,
                            "first_claimed_at": owner_since.isoformat(), "claimed_at": since.isoformat(),
                            "window_s": int(window.total_seconds())})
            for n, u, since, owner, owner_since, nodes in rows]
