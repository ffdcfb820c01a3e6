"""spec_mismatch: a reported model that its memory, SM count or clocks contradict (DESIGN.md, Integrity).

Each distinct reported identity (model, memory, SMs, max SM clock) is
compared with the reference table (fleetscope/gpu_models.py): a consumer card
that names itself an H100 reports 24 GiB and 128 SMs, not 80 GiB and 132.
Identities are grouped in SQL first, so 80,000 GPUs of a handful of models
cost a handful of comparisons.

This check also marks GPUs as examined (``gpus.checked_at``): those whose
model is in the reference table and that report their memory. Being examined
does not make a GPU verified: what a host reports can be forged, so only a
passed proof of GPU does (fleetscope/proof.py, issue 14).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fleetscope import gpu_models
from fleetscope.integrity.findings import Found

if TYPE_CHECKING:
    import psycopg

KIND = "spec_mismatch"
RESOLUTION = "the GPU's reported identity now agrees with its model's reference specification"

IDENTITIES_SQL = """
SELECT model, memory_total_bytes, sm_count, max_sm_clock_mhz FROM gpus
 WHERE first_seen <= %(at)s AND model IS NOT NULL
 GROUP BY 1, 2, 3, 4
"""

CLAIMS_SQL = """
SELECT g.node_id, g.gpu_uuid, g.model, g.memory_total_bytes, g.sm_count, g.max_sm_clock_mhz
  FROM gpus g
  JOIN unnest(%(models)s::text[], %(memory)s::bigint[], %(sms)s::int[], %(clocks)s::int[]) AS bad(m, b, s, c)
    ON g.model = bad.m AND g.memory_total_bytes IS NOT DISTINCT FROM bad.b
   AND g.sm_count IS NOT DISTINCT FROM bad.s AND g.max_sm_clock_mhz IS NOT DISTINCT FROM bad.c
 WHERE g.first_seen <= %(at)s
 ORDER BY g.node_id, g.gpu_uuid
"""

# Only the first examination writes: re-marking 80,000 rows every run would
# rewrite the table for nothing (a later finding flags a GPU regardless).
MARK_CHECKED_SQL = """
UPDATE gpus SET checked_at = %(at)s
 WHERE checked_at IS NULL AND first_seen <= %(at)s AND memory_total_bytes IS NOT NULL
   AND model = ANY(%(models)s)
"""


def find(conn: psycopg.Connection, *, at: datetime) -> list[Found]:
    """Every claim whose identity disagrees with its model's reference row, as of ``at``; marks examined GPUs."""
    bad: list[tuple[str, int | None, int | None, int | None]] = []
    problems: dict[tuple, list[str]] = {}
    known: list[str] = []
    for model, memory, sms, clock in conn.execute(IDENTITIES_SQL, {"at": at}).fetchall():
        row = gpu_models.lookup(model)
        if row is None:
            continue
        known.append(model)
        found = gpu_models.spec_problems(row, memory_total_bytes=memory, sm_count=sms, max_sm_clock_mhz=clock)
        if found:
            bad.append((model, memory, sms, clock))
            problems[(model, memory, sms, clock)] = found
    conn.execute(MARK_CHECKED_SQL, {"at": at, "models": sorted(set(known))})
    if not bad:
        return []
    rows = conn.execute(CLAIMS_SQL, {"at": at, "models": [b[0] for b in bad], "memory": [b[1] for b in bad],
                                     "sms": [b[2] for b in bad], "clocks": [b[3] for b in bad]}).fetchall()
    out = []
    for n, u, model, memory, sms, clock in rows:
        ref = gpu_models.lookup(model)
        out.append(Found(node_id=n, gpu_uuid=u, evidence={
            "model": model, "reference_model": ref.model, "reference_table_version": gpu_models.TABLE_VERSION,
            "reported": {"memory_total_bytes": memory, "sm_count": sms, "max_sm_clock_mhz": clock},
            "expected": {"memory_gib": ref.memory_gib, "sm_count": ref.sm_count,
                         "max_sm_clock_mhz": ref.max_sm_clock_mhz},
            "problems": problems[(model, memory, sms, clock)]}))
    return out
