"""Findings: storing what a check found, idempotently, and resolving what it no longer finds.

Every check produces the complete list of what it finds now (``Found``);
``reconcile`` makes ``integrity_findings`` agree with it in one transaction:
a subject found again keeps its open finding (``last_seen`` and evidence
refreshed: re-running finds nothing new), a new subject opens a finding, and
an open finding of that kind whose subject is no longer found is resolved
with the check's resolution text (the evidence is gone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Found:
    """One subject a check found, with its evidence. Subjects: a GPU claim, a node, or a fleet event."""

    node_id: int | None = None
    gpu_uuid: str | None = None
    subject: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, str, str]:
        """The open-finding key, as the unique index integrity_findings_open has it."""
        return (self.node_id or 0, self.gpu_uuid or "", self.subject or "")


@dataclass(frozen=True)
class Reconciled:
    """What one run of one check changed."""

    kind: str
    opened: int
    refreshed: int
    resolved: int


# Open or refresh, in one statement; (xmax = 0) tells an insert from an update.
UPSERT_SQL = """
INSERT INTO integrity_findings AS f (kind, node_id, gpu_uuid, subject, evidence, first_seen, last_seen)
SELECT %(kind)s, n, nullif(u, ''), nullif(s, ''), e, %(at)s, %(at)s
  FROM unnest(%(nodes)s::bigint[], %(uuids)s::text[], %(subjects)s::text[], %(evidence)s::jsonb[]) AS t(n, u, s, e)
ON CONFLICT (kind, coalesce(node_id, 0), coalesce(gpu_uuid, ''), coalesce(subject, '')) WHERE resolved_at IS NULL
DO UPDATE SET last_seen = greatest(f.last_seen, EXCLUDED.last_seen), evidence = EXCLUDED.evidence
RETURNING (xmax = 0)
"""

# Resolve this kind's open findings whose subject was not found this run.
RESOLVE_SQL = """
UPDATE integrity_findings f SET resolved_at = %(at)s, resolution = %(resolution)s
 WHERE f.kind = %(kind)s AND f.resolved_at IS NULL AND f.first_seen <= %(at)s
   AND (coalesce(f.node_id, 0), coalesce(f.gpu_uuid, ''), coalesce(f.subject, '')) NOT IN (
        SELECT n, u, s FROM unnest(%(nodes)s::bigint[], %(uuids)s::text[], %(subjects)s::text[]) AS t(n, u, s))
"""


def reconcile(conn: psycopg.Connection, kind: str, found: list[Found], *, at: datetime,
              resolution: str) -> Reconciled:
    """Make the open findings of ``kind`` exactly ``found``, as of ``at``; returns the counts changed."""
    unique = {f.key: f for f in found}  # one finding per subject, as the index allows
    keys = list(unique)
    params = {
        "kind": kind, "at": at, "resolution": resolution,
        "nodes": [k[0] for k in keys], "uuids": [k[1] for k in keys], "subjects": [k[2] for k in keys],
        "evidence": [json.dumps(unique[k].evidence, sort_keys=True, default=str) for k in keys],
    }
    # The upsert stores NULL for node 0; node ids start at 1 (bigserial).
    params_upsert = dict(params, nodes=[k or None for k in params["nodes"]])
    with conn.transaction():
        opened = refreshed = 0
        if keys:
            for (inserted,) in conn.execute(UPSERT_SQL, params_upsert).fetchall():
                opened += inserted
                refreshed += not inserted
        resolved = conn.execute(RESOLVE_SQL, params).rowcount
    return Reconciled(kind=kind, opened=opened, refreshed=refreshed, resolved=resolved)
