"""A small fleet with a week of history, for the publication and verification tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

import json

import numpy as np

from fleetscope import proof
from fleetscope.gpu_models import lookup
from fleetscope.integrity import run_checks
from tests.fleetdata import T0, Fleet

AS_OF = T0


def week_fleet(conn: psycopg.Connection) -> list[int]:
    """Four nodes over 8 days: steady, flaky, gone offline, virtualised; jobs, shared UUIDs, observing gaps."""
    fleet = Fleet(conn)
    steady, flaky, gone, cheat = (fleet.node(registered_at=T0 - timedelta(days=8)) for _ in range(4))
    late = fleet.node(registered_at=T0 - timedelta(hours=30))
    fleet.gpus(steady, ["GPU-s1", "GPU-s2", "GPU-shared"], since=T0 - timedelta(days=8))
    fleet.gpus(flaky, ["GPU-f1", "GPU-shared"], since=T0 - timedelta(days=8), lost=["GPU-f2"])
    fleet.gpus(gone, ["GPU-g1"], since=T0 - timedelta(days=8), model="NVIDIA GeForce RTX 4090")
    fleet.gpus(cheat, ["GPU-c1", "GPU-c2"], since=T0 - timedelta(days=8), model="NVIDIA H100 80GB HBM3")
    fleet.gpus(late, ["GPU-l1"], since=T0 - timedelta(hours=30), model="Apple M2 Pro")
    conn.execute("UPDATE gpus SET virtualization_mode = 'vgpu' WHERE gpu_uuid = 'GPU-c2'")
    conn.execute("UPDATE gpus SET memory_total_bytes = 81559::bigint * 1048576 WHERE model = 'NVIDIA H100 80GB HBM3'")
    conn.execute("UPDATE gpus SET memory_total_bytes = 24564::bigint * 1048576 WHERE model = 'NVIDIA GeForce RTX 4090'")
    # We observed for 8 days but for a 3-hour upgrade two days ago.
    fleet.observing(T0 - timedelta(days=8), T0 - timedelta(days=2, hours=3))
    fleet.observing(T0 - timedelta(days=2), T0 + timedelta(minutes=5))
    rows = []
    for k in range(8 * 24 * 4):  # every 15 minutes (the slot grid is 15 s: sparse uptime, exact numbers)
        t = T0 - timedelta(days=8) + timedelta(minutes=15 * k, seconds=3)
        rows += [(steady, t, True), (flaky, t, k % 3 != 0), (cheat, t, True)]
        if t < T0 - timedelta(days=1):
            rows.append((gone, t, True))
        if t > T0 - timedelta(hours=30):
            rows.append((late, t, k % 2 == 0))
    for k in range(1, 20):  # and densely in the last five minutes
        rows += [(steady, T0 - timedelta(seconds=15 * k), True), (cheat, T0 - timedelta(seconds=15 * k), True)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO observations (time, node_id, ok, source, slot) VALUES (%s, %s, %s, 'push',"
                        " floor(extract(epoch FROM %s::timestamptz) / 15)::bigint)",
                        [(t, n, ok, t) for n, t, ok in rows])
    fleet.job("j1", steady, gpu_count=2, price="1.25", started_at=T0 - timedelta(days=3),
              ended_at=T0 - timedelta(days=2), status="succeeded")
    fleet.job("j2", steady, gpu_count=1, price="2.10", started_at=T0 - timedelta(hours=5))
    fleet.job("j3", flaky, gpu_count=1, price="0.333333", started_at=T0 - timedelta(days=40),
              ended_at=T0 - timedelta(days=10), status="failed")
    fleet.job("j4", flaky, gpu_count=2, price="0.7", started_at=T0 - timedelta(hours=20),
              ended_at=T0 - timedelta(hours=1), status="failed")
    fleet.job("j5", gone, gpu_count=1, price="0.5", started_at=T0 - timedelta(hours=2))  # hired while offline
    fleet.job("j6", cheat, gpu_count=2, price="3.99", started_at=T0 - timedelta(hours=1, seconds=7))
    run_checks(conn, at=T0 - timedelta(minutes=10))
    # Proofs of GPU: steady's GPUs passed 30 minutes ago (openings in the bundle)
    # and flaky's 5 hours ago (verdicts only); the cheat's H100s failed on a wrong entry.
    record_proofs(conn, T0 - timedelta(minutes=30), [(steady, "GPU-s1"), (steady, "GPU-s2"), (steady, "GPU-shared")])
    record_proofs(conn, T0 - timedelta(hours=5), [(flaky, "GPU-f1")])
    record_proofs(conn, T0 - timedelta(minutes=20), [(cheat, "GPU-c1")], wrong=True)
    return [steady, flaky, gone, cheat, late]


SCALE = 1e-7


def record_proofs(conn: psycopg.Connection, at: datetime, claims: list[tuple[int, str]], *,
                  wrong: bool = False) -> int:
    """A round at ``at`` in which each claim proved honestly with NumPy (or, ``wrong``, with one entry off).

    Stored as the collector stores them (collector/proof.py); a wrong proof
    also opens its proof_failed finding. Returns the round id.
    """
    seed = proof.new_seed()
    round_id = conn.execute(
        "INSERT INTO proof_rounds (opened_at, seed, protocol_version, scale, share) VALUES (%s, %s, %s, %s, 1)"
        " RETURNING round_id", (at, seed, proof.PROTOCOL_VERSION, SCALE)).fetchone()[0]
    for node_id, gpu_uuid in claims:
        model, memory = conn.execute("SELECT model, memory_total_bytes FROM gpus WHERE node_id = %s AND gpu_uuid = %s",
                                     (node_id, gpu_uuid)).fetchone()
        size = proof.size_for(lookup(model), memory_bytes=memory, scale=SCALE)
        key = proof.keys(seed, node_id, gpu_uuid)
        c = proof.a_block(key, np.arange(size.n), np.arange(size.k)) @ proof.b_block(key, np.arange(size.k),
                                                                                     np.arange(size.n))
        rows, cols = proof.choose_entries(size.n)
        if wrong:
            c[rows[0], cols[0]] += 1.0
        levels = proof.merkle_levels(proof.chunk_leaves(c))
        flat = c.astype("<f4").reshape(-1)
        openings = [proof.opening(leaf, flat[leaf * proof.CHUNK_ENTRIES:(leaf + 1) * proof.CHUNK_ENTRIES].tobytes(),
                                  proof.merkle_path(levels, leaf))
                    for leaf in proof.checked_leaves(size.n, rows, cols)]
        started, committed = at + timedelta(seconds=0.05), at + timedelta(seconds=1.5)
        seconds = proof.seconds_of(offered_at=at, committed_at=committed, rtt_s=0.05)
        verdict = proof.judge(key, size, root=levels[-1][0], rows=rows, cols=cols, openings=openings,
                              seconds=seconds, deadline=size.budget_s)
        decided = committed + timedelta(seconds=0.2)
        conn.execute(
            "INSERT INTO proof_challenges (round_id, node_id, gpu_uuid, model, memory_total_bytes, n, k,"
            " reference_tflops, budget_s, offered_at, started_at, rtt_s, committed_at, root, rows, columns, openings,"
            " verdict, reason, seconds, tflops, decided_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (round_id, node_id, gpu_uuid, model, memory, size.n, size.k, size.reference_tflops, size.budget_s, at, started,
             0.05, committed, levels[-1][0].hex(), rows, cols,
             json.dumps(openings), verdict.verdict,
             verdict.reason or None, verdict.seconds, verdict.tflops, decided))
        if verdict.verdict == "failed":
            conn.execute("INSERT INTO integrity_findings (kind, node_id, gpu_uuid, evidence, first_seen, last_seen)"
                         " VALUES ('proof_failed', %s, %s, %s, %s, %s)",
                         (node_id, gpu_uuid, json.dumps({"round_id": round_id, "reason": verdict.reason}),
                          decided, decided))
    return round_id
