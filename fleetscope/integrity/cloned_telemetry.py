"""cloned_telemetry: GPUs with different UUIDs whose telemetry is identical over many samples (DESIGN.md).

Two real GPUs never report the same utilisation, power, temperature, clocks
and energy counter sample after sample; a host that invents extra "GPUs" by
copying one GPU's readings does. Over the last ``window``, each GPU's series
(every sampled value) is reduced to a fingerprint; GPUs with at
least ``min_samples`` samples whose series is not constant and whose
fingerprints are equal are findings, one per claim. It resolves when the
series differ again or stop (a finding needs fresh evidence).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fleetscope.integrity.findings import Found

if TYPE_CHECKING:
    import psycopg

KIND = "cloned_telemetry"
RESOLUTION = "the GPU's telemetry is no longer identical to another GPU's"
# 10 minutes is 40 samples at the default 15 s interval; 20 identical samples
# of five wandering values (and an energy counter) do not happen by chance.
DEFAULT_WINDOW = timedelta(minutes=10)
DEFAULT_MIN_SAMPLES = 20

# A constant series (an idle GPU that reports 0 % and a fixed power on a
# driver without an energy counter) is left out: two such GPUs are alike
# without being copies.
# The fingerprint of a series is the number of samples and two sums of
# per-sample hashes of all the values (PostgreSQL's record hash, with two
# seeds): equal series give equal fingerprints, and two different real series
# colliding on both 32- and 64-bit sums is beyond chance. It costs a fifth of
# hashing the values' text in time order (bench/bench_integrity.py), and
# being order-free it needs no sort. Two GPUs whose samples are the same
# values in a different order would also match; for wandering telemetry that
# is a copy too.
FIND_SQL = """
WITH series AS (
    SELECT node_id, gpu_uuid, count(*) AS n,
           sum(hash_record(row(gpu_util, mem_copy_util, fb_used_mib, power_w, energy_mj, temp_c,
                               sm_clock_mhz, mem_clock_mhz))) AS h1,
           sum(hash_record_extended(row(gpu_util, mem_copy_util, fb_used_mib, power_w, energy_mj, temp_c,
                                        sm_clock_mhz, mem_clock_mhz), 1)::numeric) AS h2
      FROM gpu_samples
     WHERE time > %(since)s AND time <= %(at)s AND NOT lost
     GROUP BY node_id, gpu_uuid
    HAVING count(*) >= %(min_samples)s
       AND (min(gpu_util) <> max(gpu_util) OR min(power_w) <> max(power_w) OR min(temp_c) <> max(temp_c)
            OR min(energy_mj) <> max(energy_mj) OR min(sm_clock_mhz) <> max(sm_clock_mhz))
), twins AS (
    SELECT n, h1, h2, array_agg(gpu_uuid ORDER BY gpu_uuid) AS uuids FROM series
     GROUP BY n, h1, h2 HAVING count(DISTINCT gpu_uuid) > 1
)
SELECT s.node_id, s.gpu_uuid, t.uuids FROM series s JOIN twins t USING (n, h1, h2)
 ORDER BY s.node_id, s.gpu_uuid
"""


def find(conn: psycopg.Connection, *, at: datetime, window: timedelta = DEFAULT_WINDOW,
         min_samples: int = DEFAULT_MIN_SAMPLES) -> list[Found]:
    """Every claim whose last ``window`` of telemetry is identical to another UUID's, as of ``at``."""
    rows = conn.execute(FIND_SQL, {"at": at, "since": at - window, "min_samples": min_samples}).fetchall()
    return [Found(node_id=n, gpu_uuid=u, evidence={"identical_to": [x for x in uuids if x != u],
                                                   "window_s": int(window.total_seconds()),
                                                   "min_samples": min_samples})
            for n, u, uuids in rows]
