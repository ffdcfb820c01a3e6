"""Benchmark: the proof of GPU's verifier and prover costs (issue 14).

Issue 14's targets: <= 5 ms of collector CPU per GPU-proof; a full-fleet round
(10,000 nodes x 8 GPUs) verified within 5 minutes on one core; prover
overhead <= 1 % of a GPU's time per day.

1. Verifier CPU per GPU-proof, per claimed model at production sizes
   (fleetscope.proof.size_for at scale 1: an H100's C is 99,584 x 99,584,
   38.7 M chunk leaves). Each proof is an open request as the wire carries
   it (JSON with one opening record per chunk holding a named entry: up to
   eight base64 chunks of 1 KiB and their hex Merkle paths) whose chunks hold
   the right values at the named entries and whose paths lead to the
   committed root (one tree: the opened leaves real, every other node
   random); the clock (process CPU time) covers what the collector does with
   it: parse, then fleetscope.proof.judge (decode, up to eight leaf hashes
   and paths, eight entries recomputed in float64 from A's rows and B's
   columns). A baseline in the same rounds: the same request checked against
   the commitment only (parse, decode, leaves, paths), the floor any verifier
   pays to read an opening.
2. A full round: 80,000 GPU-proofs in a fleet mix (by default 40 % A100,
   25 % H100, 20 % RTX 4090, 15 % L40S), either extrapolated from the per-model
   medians or, with --full, every proof verified for real, one after another
   on one core.
3. The prover's share of a GPU's day: proofs per day (86,400 / interval x
   share) x the time a proof takes at the honest efficiency, against the 1 %
   cap the collector enforces (MAX_SHARE_OF_DAY); and the NumPy prover's
   own time at the demo's scale.

    python bench/bench_proof.py                  # per-model medians, extrapolated round
    python bench/bench_proof.py --full           # the whole 80,000-proof round, for real (about 5 minutes)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.demo import PROOF_SCALE as DEMO_PROOF_SCALE  # noqa: E402
from fleetscope import proof  # noqa: E402
from fleetscope.gpu_models import lookup  # noqa: E402

MIX = {"NVIDIA A100-SXM4-80GB": 0.40, "NVIDIA H100 80GB HBM3": 0.25, "NVIDIA GeForce RTX 4090": 0.20,
       "NVIDIA L40S": 0.15}
NODES, GPUS = 10_000, 8
# Honest large-GEMM efficiency assumed for a host's time (docs/proof.md: 0.65-0.95 measured by others).
HONEST_EFFICIENCY = 0.8


def machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores, {mem_gb:.0f} GiB, {platform.machine()}, Python {platform.python_version()}, "
            f"NumPy {np.__version__}")


def opening_request(model: str, rng: secrets.SystemRandom) -> tuple[bytes, dict]:
    """An open request for one GPU at production size, with the verifier's own state (key, size, root, rows, cols)."""
    row = lookup(model)
    size = proof.size_for(row)
    node_id, uuid = rng.randrange(1, NODES), f"GPU-{secrets.token_hex(16)}"
    key = proof.keys(proof.new_seed(), node_id, uuid)
    rows, cols = proof.choose_entries(size.n, rng)
    exact, _ = proof.expected_entries(key, size.k, rows, cols)
    # Every opened chunk must lead to one root: give them one tree whose other nodes are random.
    chunks = {}
    for leaf in proof.checked_leaves(size.n, rows, cols):
        chunks[leaf] = np.random.default_rng(leaf).standard_normal(proof.CHUNK_ENTRIES).astype("<f4")
    for m, (i, j) in enumerate(zip(rows, cols, strict=True)):
        chunks[proof.leaf_of(i, j, size.n)][(i * size.n + j) % proof.CHUNK_ENTRIES] = exact[m]
    leaves = {leaf: values.tobytes() for leaf, values in chunks.items()}
    root, paths = _tree_for(leaves, proof.leaf_count(size.n))
    opened = [proof.opening(leaf, leaves[leaf], paths[leaf]) for leaf in sorted(leaves)]
    body = json.dumps({"round_id": 1, "gpu_uuid": uuid, "openings": opened}).encode()
    return body, {"key": key, "size": size, "root": root, "rows": rows, "cols": cols}


def _tree_for(leaves: dict[int, bytes], count: int) -> tuple[bytes, dict[int, list[bytes]]]:
    """A root and paths for the given leaves of a ``count``-leaf tree, every other node random."""
    known = {i: proof.leaf_hash(data) for i, data in leaves.items()}
    paths: dict[int, list[bytes]] = {i: [] for i in leaves}
    width = count
    level = dict(known)
    index_of = {i: i for i in leaves}
    while width > 1:
        up: dict[int, bytes] = {}
        for pos in sorted(level):
            parent = pos // 2
            if parent in up:
                continue
            sibling = pos ^ 1
            if sibling >= width:
                up[parent] = level[pos]
                continue
            other = level.get(sibling) or secrets.token_bytes(32)
            left, right = (level[pos], other) if pos % 2 == 0 else (other, level[pos])
            up[parent] = proof._node(left, right)
            for i, at in index_of.items():
                if at == pos:
                    paths[i].append(other)
                elif at == sibling:
                    paths[i].append(level[pos])
        index_of = {i: at // 2 for i, at in index_of.items()}
        level = up
        width = (width + 1) // 2
    root = next(iter(level.values()))
    return root, paths


def verify_request(body: bytes, state: dict, *, full: bool) -> str:
    """What the collector does with an open request: the verdict (``full``) or the commitment check alone."""
    req = json.loads(body)
    size = state["size"]
    if full:
        return proof.judge(state["key"], size, root=state["root"], rows=state["rows"], cols=state["cols"],
                           openings=req["openings"], seconds=2.0, deadline=size.budget_s).verdict
    count = proof.leaf_count(size.n)
    ok = all(proof.root_from_path(proof.leaf_hash(base64.b64decode(o["chunk"], validate=True)), o["leaf"], count,
                                  [bytes.fromhex(p) for p in o["path"]]) == state["root"]
             for o in req["openings"])
    return "committed" if ok else "mismatch"


def per_model(samples: int, rounds: int, rng: secrets.SystemRandom) -> dict[str, dict]:
    out = {}
    for model in MIX:
        prepared = [opening_request(model, rng) for _ in range(samples)]
        full_ms, base_ms = [], []
        for _ in range(rounds):
            for full, store in ((False, base_ms), (True, full_ms)):
                t = time.process_time()
                for body, state in prepared:
                    verdict = verify_request(body, state, full=full)
                    assert verdict in ("passed", "committed"), verdict
                store.append((time.process_time() - t) / samples * 1e3)
        size = prepared[0][1]["size"]
        out[model] = {"n": size.n, "k": size.k, "body_kib": round(len(prepared[0][0]) / 1024, 1),
                      "verify_ms": statistics.median(full_ms), "commitment_only_ms": statistics.median(base_ms),
                      "ratio": statistics.median(f / b for f, b in zip(full_ms, base_ms, strict=True))}
    return out


def full_round(rng: secrets.SystemRandom) -> dict:
    """Every proof of a 10,000 x 8 round verified for real on this core (prepared in batches; only verification timed)."""
    total = NODES * GPUS
    cpu = 0.0
    done = 0
    batch = 500
    counts = {m: round(total * share) for m, share in MIX.items()}
    for model, count in counts.items():
        while count > 0:
            n = min(batch, count)
            prepared = [opening_request(model, rng) for _ in range(n)]
            t = time.process_time()
            for body, state in prepared:
                assert verify_request(body, state, full=True) == "passed"
            cpu += time.process_time() - t
            count -= n
            done += n
    return {"proofs": done, "cpu_s": cpu}


def prover_share(interval_s: float, share: float) -> dict:
    per_day = 86_400 / interval_s * share
    seconds = proof.TARGET_S / HONEST_EFFICIENCY
    t = time.process_time()
    size = proof.size_for(lookup("NVIDIA A100-SXM4-80GB"), scale=DEMO_PROOF_SCALE)
    key = proof.keys(proof.new_seed(), 1, "GPU-x")
    c = proof.a_block(key, np.arange(size.n), np.arange(size.k)) @ proof.b_block(key, np.arange(size.k),
                                                                                 np.arange(size.n))
    proof.merkle_levels(proof.chunk_leaves(c))
    demo_ms = (time.process_time() - t) * 1e3
    return {"proofs_per_day": per_day, "seconds_per_proof": seconds,
            "share_of_day": per_day * seconds / 86_400, "cap": proof.MAX_SHARE_OF_DAY,
            "demo_scale_numpy_prover_ms": demo_ms, "demo_size": [size.n, size.k]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=40, help="proofs per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="verify a whole 80,000-proof round for real")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rng = secrets.SystemRandom()
    print(f"# bench_proof {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}")
    models = per_model(args.samples, args.rounds, rng)
    print(f"{'model':28} {'n':>7} {'k':>7} {'body':>8} {'verify':>9} {'commit-only':>12} {'ratio':>6}")
    for model, r in models.items():
        print(f"{model:28} {r['n']:7d} {r['k']:7d} {r['body_kib']:6.1f}Ki {r['verify_ms']:7.2f}ms "
              f"{r['commitment_only_ms']:10.2f}ms {r['ratio']:6.2f}")
    mean_ms = sum(MIX[m] * r["verify_ms"] for m, r in models.items())
    worst = max(r["verify_ms"] for r in models.values())
    print(f"mix mean {mean_ms:.2f} ms per GPU-proof (worst model {worst:.2f} ms; target <= 5 ms)")
    print(f"round of {NODES:,} x {GPUS}: {NODES * GPUS * mean_ms / 1e3:.0f} s of one core, extrapolated "
          f"(target <= 300 s)")
    result = {"machine": machine(), "date": datetime.now(timezone.utc).isoformat(), "models": models,
              "mix_mean_ms": mean_ms}
    if args.full:
        r = full_round(rng)
        print(f"full round, for real: {r['proofs']:,} proofs in {r['cpu_s']:.0f} s of CPU "
              f"({r['cpu_s'] / r['proofs'] * 1e3:.2f} ms each; target <= 300 s)")
        result["full_round"] = r
    for interval, share in ((3600, 0.25), (3600, 1.0), (20, 1.0)):
        p = prover_share(interval, share)
        capped = p["share_of_day"] > p["cap"]
        print(f"prover: interval {interval} s, share {share}: {p['proofs_per_day']:.0f} proofs/day x "
              f"{p['seconds_per_proof']:.1f} s = {p['share_of_day']:.3%} of a GPU's day"
              + (f", capped at {p['cap']:.0%}: the collector skips a node whose last 24 h of proofs reach it"
                 if capped else f" (cap {p['cap']:.0%})"))
        result[f"prover_{interval}_{share}"] = p
    print(f"NumPy prover at the demo's scale (n={p['demo_size'][0]}, k={p['demo_size'][1]}): "
          f"{p['demo_scale_numpy_prover_ms']:.0f} ms of CPU per GPU")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
