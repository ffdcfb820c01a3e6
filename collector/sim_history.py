"""A simulated fleet's past: days of history written before the demo's services start (issue 16).

A fresh ``fleetscope demo`` used to open on an empty week: 0 nodes on the
first tick, $0 revenue, charts of one point. ``write_history`` gives the
simulated fleet the past a live network has, written straight into the
database with COPY, and records its span in ``simulated_history`` (migration
0008, fleetscope/simulated.py) so that every page that shows it says it is
simulated. It writes, for ``days`` before ``end``:

- observations: a successful scrape per node per slot of its interval while
  the host is up and fleetscope was observing, a failed one (HTTP 503) per
  slot while it is down: flapping hosts follow ``SimFleet.is_up``, and a few
  healthy hosts have an incident (offline for hours);
- the GPUs' identities and GPU sets, parsed by the collector's own parser
  from each host's /metrics and written with the writer's own statements;
- observing periods for the history's collector id, with one outage of our
  own (no heartbeat: every node's uptime leaves it out);
- telemetry: one sample per GPU every TELEMETRY_STEP_S (finer over the last
  day), busy while hired;
- jobs for the hired hosts, back to back, a few failed, one failed by each
  incident; each hired host's last job is still running at ``end`` and the
  demo's marketplace carries it on;
- a fleet jump: the H100 hosts join the fleet part-way (their registration
  and first observation), and ``fleet_gpu_counts`` (what the fleet_jump check
  judges) gets the fleet's registered and online GPUs every COUNTS_STEP.

Nothing is written for a fleet whose nodes already have observations (a
demo database started before keeps its own past). Proofs of GPU are not
simulated: a GPU is verified only by real work (docs/proof.md), so the
fleet's GPUs are unverified until the demo's first proof rounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np

from collector.parse import PayloadParser
from collector.group import INSERT_SETS_SQL, OBSERVATION_COLUMNS, UPSERT_IDENTITY_SQL, sets_json
from exporters.sim import digest
from fleetscope import simulated
from fleetscope.integrity import fleet_jump

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import psycopg

    from exporters.sim import HostSpec, SimFleet

COLLECTOR_ID = "simulated-history"
JOB_PREFIX = "sim-"
NOTE = ("simulated history: written by fleetscope demo's simulator before its services started, "
        "not observed by fleetscope")
# The model whose hosts join part-way: the fleet jump the charts mark.
JOINING_MODEL = "NVIDIA H100 80GB HBM3"
JOIN_AT = 0.55            # share of the span after which they join
# Our own outage: the collector was down (no heartbeat) for this long, this far into the span.
OUTAGE_AT = 0.3
OUTAGE = timedelta(minutes=50)
# Healthy hosts offline for a while (an incident each), none in the last day's
# last hours so the demo opens with them back.
INCIDENTS = 4
INCIDENT_HOURS = (1.0, 5.0)
# Telemetry: a sample per GPU this often, and this often over the last day
# (the node page's charts bucket 24 h into 10-minute means, 7 days into hours).
TELEMETRY_STEP_S = 3600
TELEMETRY_RECENT_STEP_S = 600
RECENT = timedelta(hours=24)
COUNTS_STEP = timedelta(minutes=15)
# Jobs: hours per job, the gap before the next, the share that fail.
JOB_HOURS = (2.0, 12.0)
JOB_GAP_MIN = (0.0, 40.0)
JOB_FAILED = 0.08
SAMPLE_COLUMNS = ("time", "node_id", "gpu_uuid", "gpu_index", "gpu_util", "mem_copy_util", "fb_used_mib",
                  "fb_free_mib", "power_w", "temp_c", "sm_clock_mhz", "mem_clock_mhz", "lost")
SAMPLE_TYPES = ("timestamptz", "int8", "text", "int2", "float4", "float4", "float4", "float4", "float4", "float4",
                "float4", "float4", "bool")


@dataclass
class History:
    """What ``write_history`` wrote: the span, counts, and the jobs still running at its end."""

    span: simulated.Span
    observations: int = 0
    samples: int = 0
    jobs: int = 0
    gpu_hours: float = 0.0
    revenue_usd: Decimal = Decimal(0)
    running: list[dict] = field(default_factory=list)   # the marketplace's job bodies
    incidents: list[tuple[int, datetime, datetime]] = field(default_factory=list)  # (node_id, from, to)
    outage: tuple[datetime, datetime] | None = None
    jump_at: datetime | None = None
    seconds: float = 0.0


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def write_history(conn: psycopg.Connection, fleet: SimFleet, node_ids: Sequence[int], *, end: datetime,
                  days: float = 7.0, interval_s: int = 15, grace_s: int | None = None,
                  price_of: Callable[[HostSpec], Decimal], running_job_id: Callable[[int], str]
                  ) -> History | None:
    """Write ``days`` of simulated history for ``fleet`` (its nodes ``node_ids``, in host order) up to ``end``.

    Returns what was written, or None when the nodes already have
    observations (nothing is written then). ``price_of(host)`` is the price
    per GPU-hour of a host's jobs; ``running_job_id(n)`` names the n-th job
    still running at ``end`` (the marketplace's naming). ``conn`` is an
    autocommit connection; everything is written in one transaction.
    """
    started = time.perf_counter()
    ids = list(node_ids)
    if conn.execute("SELECT EXISTS (SELECT 1 FROM observations WHERE node_id = ANY(%s))", (ids,)).fetchone()[0]:
        return None
    grace_s = grace_s or 3 * interval_s
    end_s = end.timestamp()
    start_s = end_s - days * 86400
    span = simulated.Span(collector_id=COLLECTOR_ID, started_at=_utc(start_s), ended_at=end, job_prefix=JOB_PREFIX,
                          nodes=len(ids), note=NOTE)
    out = History(span=span)
    rng = np.random.default_rng(digest(fleet.seed, "history"))

    # When fleetscope "was observing": all the span but one outage, more than a day back.
    outage_from = start_s + OUTAGE_AT * (end_s - start_s)
    if end_s - outage_from > RECENT.total_seconds() + OUTAGE.total_seconds():
        out.outage = (_utc(outage_from), _utc(outage_from + OUTAGE.total_seconds()))
    periods = ([(start_s, outage_from), (outage_from + OUTAGE.total_seconds(), end_s)] if out.outage
               else [(start_s, end_s)])

    # Who joins when: the H100 hosts part-way (a fleet jump), everyone else at the start.
    join_s = [start_s] * len(fleet)
    jump_s = math.floor((start_s + JOIN_AT * (end_s - start_s)) / interval_s) * interval_s
    if days >= 1:
        for i, host in enumerate(fleet.hosts):
            if host.model == JOINING_MODEL and host.profile == "healthy":
                join_s[i] = jump_s
                out.jump_at = _utc(jump_s)
    # Incidents: a few healthy, unhired-or-hired hosts down for hours, ending before the last 6 hours.
    healthy = [i for i, h in enumerate(fleet.hosts) if h.profile == "healthy" and join_s[i] == start_s]
    incidents: dict[int, tuple[float, float]] = {}
    if days >= 1:
        for i in rng.choice(healthy, size=min(INCIDENTS, len(healthy)), replace=False):
            hours = rng.uniform(*INCIDENT_HOURS)
            begin = rng.uniform(start_s + 3600, end_s - 6 * 3600 - hours * 3600)
            incidents[int(i)] = (begin, begin + hours * 3600)
            out.incidents.append((ids[int(i)], _utc(begin), _utc(begin + hours * 3600)))

    # On a fresh database the history also fills the hourly rollup and the
    # slot runs itself, from the rows it writes (what rollups.refresh and
    # slot_runs.refresh would compute from them, seconds sooner); otherwise
    # they catch up from the raw rows on their own.
    fresh = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM observations)").fetchone()[0]
    k_first = math.ceil(start_s / interval_s)
    k_last = math.floor(end_s / interval_s)
    parser = PayloadParser()
    identity_rows, set_rows, obs_up, obs_k = [], [], {}, {}
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        # Text COPY built with NumPy: a binary write_row per row (a datetime
        # object each) was most of the history's time at 1.2 M rows.
        with conn.cursor().copy(f"COPY observations ({', '.join(OBSERVATION_COLUMNS)}) FROM STDIN") as copy:
            for i, node_id in enumerate(ids):
                offset = (digest(fleet.seed, "offset", i) % 1000) / 1000 * interval_s * 0.9
                ks = np.arange(max(k_first, math.ceil((join_s[i] - offset) / interval_s)), k_last + 1, dtype=np.int64)
                ts = ks * interval_s + offset
                ks, ts = ks[ts < end_s], ts[ts < end_s]
                observing = np.zeros(len(ts), dtype=bool)
                for lo, hi in periods:
                    observing |= (ts >= lo) & (ts < hi)
                up = _up(fleet, i, ts)
                if i in incidents:
                    lo, hi = incidents[i]
                    up &= ~((ts >= lo) & (ts < hi))
                ks, ts, up = ks[observing], ts[observing], up[observing]
                obs_up[i] = (ts, up)
                obs_k[i] = ks
                latency = np.round(rng.gamma(4.0, 3.0, len(ts)), 1).astype(str)
                times = np.datetime_as_string(np.round(ts * 1e6).astype("datetime64[us]"), unit="us")
                tail_ok, tail_down = f"\\N\t{COLLECTOR_ID}\n", f"HTTP 503\t{COLLECTOR_ID}\n"
                copy.write("".join(
                    f"{t}+00\t{node_id}\tt\tscrape\t{k}\t{lat}\t{tail_ok}" if ok
                    else f"{t}+00\t{node_id}\tf\tscrape\t{k}\t\\N\t{tail_down}"
                    for t, k, ok, lat in zip(times.tolist(), ks.tolist(), up.tolist(), latency.tolist())))
                out.observations += len(ks)
                # Its GPUs as the collector parses them, first seen when it joined.
                first = _utc(ts[0] if len(ts) else join_s[i])
                payload = parser.parse(fleet.render(i, first.timestamp()))
                seen = {ident.uuid: ident for ident in payload.identities}
                indexes = {s.gpu_uuid: s.gpu_index for s in payload.samples}
                for uuid in list(indexes) + [u for u in seen if u not in indexes]:
                    ident = seen.get(uuid)
                    identity_rows.append((node_id, first, _utc(end_s), uuid, indexes.get(uuid),
                                          *(ident[1:] if ident else (None,) * 14)))
                set_rows.append((node_id, first, sorted(s.gpu_uuid for s in payload.samples if not s.lost),
                                 sorted(payload.lost)))
        conn.execute(UPSERT_IDENTITY_SQL, [list(column) for column in zip(*identity_rows)])
        conn.execute(INSERT_SETS_SQL, (sets_json(set_rows),))
        conn.execute("UPDATE nodes n SET registered_at = x.at FROM unnest(%s::bigint[], %s::timestamptz[]) AS x(id, at)"
                     " WHERE n.node_id = x.id", (ids, [_utc(s) for s in join_s]))
        for lo, hi in periods:
            conn.execute("INSERT INTO observing_periods (collector_id, started_at, last_beat_at) VALUES (%s, %s, %s)",
                         (COLLECTOR_ID, _utc(lo), _utc(hi)))
        hired = _write_jobs(conn, fleet, ids, obs_up, out, rng, price_of=price_of, running_job_id=running_job_id,
                            interval_s=interval_s, end_s=end_s)
        _write_telemetry(conn, fleet, ids, identity_rows, set_rows, obs_up, hired, out, start_s=start_s, end_s=end_s,
                         interval_s=interval_s)
        _write_counts(conn, fleet, ids, identity_rows, set_rows, obs_up, start_s=start_s, end_s=end_s,
                      grace_s=grace_s, outage=out.outage)
        if fresh:
            _write_rollups(conn, ids, obs_k, obs_up, interval_s=interval_s, end=end)
        else:  # rows below the rollup's watermark: its next refresh recomputes from the span's start
            from fleetscope import rollups
            from fleetscope.migrate import database_mode

            rollups.invalidate(conn, span.started_at, mode=database_mode(conn) or "plain")
        simulated.record(conn, span)
    out.seconds = time.perf_counter() - started
    return out


def _write_rollups(conn, ids, obs_k, obs_up, *, interval_s: int, end: datetime) -> None:
    """The hourly rollup's closed hours and the slot runs of the rows just written, with their watermarks.

    The same aggregates as fleetscope/rollups.py (ok slots, observations and
    failures per node and hour) and fleetscope/slot_runs.py (runs of
    consecutive successful slots); tests/test_sim_history.py holds them to
    those modules' own refresh.
    """
    from fleetscope.migrate import database_mode
    from fleetscope.rollups import floor_bucket

    mark = floor_bucket(end)
    hourly, runs = [], []
    for i, node_id in enumerate(ids):
        ks, (ts, up) = obs_k[i], obs_up[i]
        # One observation per slot in the history: ok slots per hour are its successful observations.
        buckets = (np.floor(ts / 3600) * 3600).astype(np.int64)
        closed = buckets < mark.timestamp()
        hours, rows = np.unique(buckets[closed], return_counts=True)
        ok_hours, ok_rows = np.unique(buckets[closed & up], return_counts=True)
        ok_in = dict(zip(ok_hours.tolist(), ok_rows.tolist()))
        for b, n in zip(hours.tolist(), rows.tolist()):
            hourly.append((node_id, _utc(b), ok_in.get(b, 0), n, n - ok_in.get(b, 0)))
        ok = np.unique(ks[up])
        if ok.size:
            breaks = np.flatnonzero(np.diff(ok) > 1)
            firsts = np.concatenate([ok[:1], ok[breaks + 1]]).tolist()
            lasts = np.concatenate([ok[breaks], ok[-1:]]).tolist()
            runs.extend((node_id, interval_s, f, l) for f, l in zip(firsts, lasts))
    if database_mode(conn) != "timescaledb":  # TimescaleDB refreshes its continuous aggregate by policy
        with conn.cursor().copy("COPY node_hourly_mat (node_id, bucket, ok_slots, observations, failed) FROM STDIN"
                                ) as copy:
            for row in hourly:
                copy.write_row(row)
        conn.execute("UPDATE rollup_watermarks SET watermark = %s, invalidated_from = NULL WHERE name = 'node_hourly'",
                     (mark,))
    with conn.cursor().copy("COPY node_slot_runs (node_id, interval_s, first_slot, last_slot) FROM STDIN") as copy:
        for run in runs:
            copy.write_row(run)
    conn.execute("INSERT INTO node_slot_runs_watermark (watermark) VALUES (%s)"
                 " ON CONFLICT (only_row) DO UPDATE SET watermark = EXCLUDED.watermark", (end,))


def _up(fleet: SimFleet, i: int, ts: np.ndarray) -> np.ndarray:
    """Whether host ``i`` answers at each time (flapping hosts are judged per window: SimFleet.is_up)."""
    from exporters.sim import FLAP_PERIOD_S

    if fleet.hosts[i].profile != "flapping":
        return np.ones(len(ts), dtype=bool)
    windows = np.floor(ts / FLAP_PERIOD_S).astype(np.int64)
    verdict = {int(w): fleet.is_up(i, float(w) * FLAP_PERIOD_S) for w in np.unique(windows)}
    return np.array([verdict[int(w)] for w in windows], dtype=bool)


def _write_jobs(conn, fleet, ids, obs_up, out: History, rng, *, price_of, running_job_id, interval_s: int,
                end_s: float) -> dict[int, list[tuple[float, float]]]:
    """Back-to-back jobs for the hired hosts while they are up; returns each host's hired intervals."""
    hired: dict[int, list[tuple[float, float]]] = {}
    rows = []
    running_n = 0
    for i, host in enumerate(fleet.hosts):
        ts, up = obs_up[i]
        if not host.hired or not len(ts):
            continue
        price = price_of(host)
        # Runs of consecutive successful slots: a job lives inside one (an incident fails it).
        runs = _runs(ts, up, interval_s)
        spans = hired.setdefault(i, [])
        n = 0
        for r, (lo, hi) in enumerate(runs):
            t = lo + rng.uniform(0, 1800)
            last_run = r == len(runs) - 1 and hi >= end_s - interval_s
            while t < hi:
                length = rng.uniform(*JOB_HOURS) * 3600
                stop = t + length
                n += 1
                if last_run and stop + JOB_GAP_MIN[1] * 60 >= end_s:
                    # Still running at the end (one ending within a gap of it runs on):
                    # the marketplace carries it on.
                    job_id = running_job_id(running_n)
                    running_n += 1
                    rows.append((job_id, ids[i], host.n_gpus, price, _utc(t), None, "running"))
                    out.running.append({"job_id": job_id, "node_id": ids[i], "gpu_count": host.n_gpus,
                                        "price_per_gpu_hour": str(price), "started_at": _utc(t).isoformat(),
                                        "ended_at": None, "status": "running"})
                    spans.append((t, end_s))
                    _accrue(out, host.n_gpus, price, t, end_s)
                    break
                if stop >= hi:  # the host went down under it
                    stop, status = hi, "failed"
                else:
                    status = "failed" if rng.random() < JOB_FAILED else "succeeded"
                rows.append((f"{JOB_PREFIX}{ids[i]}-{n}", ids[i], host.n_gpus, price, _utc(t), _utc(stop), status))
                spans.append((t, stop))
                _accrue(out, host.n_gpus, price, t, stop)
                t = stop + rng.uniform(*JOB_GAP_MIN) * 60
    with conn.cursor().copy("COPY jobs (job_id, node_id, gpu_count, price_per_gpu_hour, started_at, ended_at, status)"
                            " FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    out.jobs = len(rows)
    return hired


def _accrue(out: History, gpus: int, price: Decimal, t0: float, t1: float) -> None:
    hours = gpus * (t1 - t0) / 3600
    out.gpu_hours += hours
    out.revenue_usd += Decimal(str(hours)) * price


def _runs(ts: np.ndarray, up: np.ndarray, interval_s: int) -> list[tuple[float, float]]:
    """[first ok time, end of the last ok slot) of each run of consecutive successful observations."""
    runs, lo, prev = [], None, None
    for t, ok in zip(ts.tolist(), up.tolist()):
        if ok and lo is None:
            lo = t
        elif ok and prev is not None and t - prev > 1.5 * interval_s:  # a gap (our outage)
            runs.append((lo, prev))
            lo = t
        elif not ok and lo is not None:
            runs.append((lo, prev))
            lo = None
        if ok:
            prev = t
    if lo is not None:
        runs.append((lo, prev + interval_s))
    return runs


def _write_telemetry(conn, fleet, ids, identity_rows, set_rows, obs_up, hired, out: History, *, start_s: float,
                     end_s: float, interval_s: int) -> None:
    """A sample per GPU per step while its host is up: busy while hired, idle otherwise (as exporters/sim.py)."""
    from exporters.sim import MODELS

    steps = np.concatenate([np.arange(math.ceil(start_s / TELEMETRY_STEP_S) * TELEMETRY_STEP_S,
                                      end_s - RECENT.total_seconds(), TELEMETRY_STEP_S),
                            np.arange(math.ceil((end_s - RECENT.total_seconds()) / TELEMETRY_RECENT_STEP_S)
                                      * TELEMETRY_RECENT_STEP_S, end_s, TELEMETRY_RECENT_STEP_S)])
    lost = {node: set(gone) for node, _since, _healthy, gone in set_rows}
    by_node: dict[int, list[tuple]] = {}
    for row in identity_rows:
        if row[3] not in lost.get(row[0], ()):  # a lost GPU reports nothing
            by_node.setdefault(row[0], []).append(row)
    with conn.cursor().copy(f"COPY gpu_samples ({', '.join(SAMPLE_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(SAMPLE_TYPES))
        for i, node_id in enumerate(ids):
            ts, up = obs_up[i]
            if not len(ts):
                continue
            # The step times at which the host was up (its nearest observation before them succeeded).
            at = steps[(steps >= ts[0]) & (steps < ts[-1])]
            pos = np.searchsorted(ts, at, side="right") - 1
            at = at[up[pos] & (at - ts[pos] < 1.5 * interval_s)]  # not while down, nor during our outage
            busy = np.zeros(len(at), dtype=bool)
            for lo, hi in hired.get(i, ()):
                busy |= (at >= lo) & (at < hi)
            profile = fleet.hosts[i].profile
            for g, row in enumerate(by_node.get(node_id, ())):
                uuid, index, model, memory = row[3], row[4], row[5], row[13]
                hw = MODELS.get(model or "") or next(iter(MODELS.values()))
                mib = (memory or hw.memory_mib * 2**20) / 2**20
                key = digest(fleet.seed, "tele", fleet.hosts[i].host_id, 0 if profile == "cloned_telemetry" else g)
                w = _wander(key, at)
                util = np.where(busy, 70 + np.round(30 * w), np.round(5 * w))
                used = np.where(busy, np.round(mib * (0.6 + 0.35 * w)), 4 + np.round(500 * w))
                power = np.where(busy, hw.idle_w + (hw.tdp_w - hw.idle_w) * util / 100 * 0.85, hw.idle_w + 5 * w)
                temp = np.where(busy, 55 + np.round(25 * (power - hw.idle_w) / (hw.tdp_w - hw.idle_w)),
                                30 + np.round(8 * w))
                sm = np.where(busy, np.round(hw.max_sm_clock_mhz * (0.85 + 0.15 * w)), hw.idle_sm_clock_mhz)
                mem_clock = np.where(busy, hw.max_mem_clock_mhz, hw.idle_mem_clock_mhz)
                for j, t in enumerate(at.tolist()):
                    copy.write_row((_utc(t), node_id, uuid, index, util[j], 2 * util[j] / 5, used[j], mib - used[j],
                                    power[j], temp[j], sm[j], mem_clock[j], False))
                out.samples += len(at)


def _wander(key: int, t: np.ndarray) -> np.ndarray:
    """A smooth value in [0, 1) per time, drifting over hours (exporters/sim.py's _wander, vectorised)."""
    x = t / 5400.0
    k = np.floor(x).astype(np.int64)
    f = x - k
    f = f * f * (3 - 2 * f)
    table = np.random.default_rng(key % 2**63).random(int(k.max() - k.min()) + 2) if len(k) else np.zeros(2)
    a, b = table[k - k.min()], table[k - k.min() + 1]
    return a + (b - a) * f


def _write_counts(conn, fleet, ids, identity_rows, set_rows, obs_up, *, start_s: float, end_s: float,
                  grace_s: int, outage: tuple[datetime, datetime] | None) -> None:
    """The fleet's registered and online GPUs every COUNTS_STEP: the history fleet_jump judges.

    The snapshot's definitions (fleetscope/snapshot.py), on the history's own
    rows: registered GPUs are distinct UUIDs first seen by t; a GPU is online
    when its node had a successful observation in (t - grace, t] and the GPU
    is in its healthy set and not lost. None is recorded while fleetscope was
    not observing (our outage): its maintenance loop did not run either.
    """
    step = COUNTS_STEP.total_seconds()
    # From when every first node has reported (a count before that is the history's own start, not a jump).
    times = np.arange(math.ceil((start_s + grace_s) / step) * step, end_s, step)
    if outage is not None:
        times = times[(times < outage[0].timestamp()) | (times >= outage[1].timestamp() + grace_s)]
    online_at = {}  # node -> online at each time
    for i, node_id in enumerate(ids):
        ts, up = obs_up[i]
        ok = np.concatenate([[0], np.cumsum(up)])
        online_at[node_id] = ok[np.searchsorted(ts, times, side="right")] > ok[np.searchsorted(ts, times - grace_s,
                                                                                              side="right")]
    first_seen: dict[str, float] = {}
    claims: dict[str, list[int]] = {}
    for row in identity_rows:
        first_seen[row[3]] = min(first_seen.get(row[3], math.inf), row[1].timestamp())
    for node, _since, healthy, lost in set_rows:
        for uuid in set(healthy) - set(lost):
            claims.setdefault(uuid, []).append(node)
    registered = np.searchsorted(np.sort(np.array(list(first_seen.values()))), times, side="right")
    online = sum(np.logical_or.reduce([online_at[n] for n in nodes]).astype(int) for nodes in claims.values())
    with conn.cursor() as cur:
        cur.executemany(fleet_jump.RECORD_SQL, [{"at": _utc(t), "registered": int(r), "online": int(o)}
                                                for t, r, o in zip(times.tolist(), registered, online)])
