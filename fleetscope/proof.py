"""Proof of GPU, protocol version 1: the definitions the prover, the verifier and auditors share.

A GPU is verified only by work it did (DESIGN.md, "Proof of GPU"; the whole
protocol and its threat model are in docs/proof.md). Per challenged GPU:

1. Matrices A (n x k) and B (k x n) whose entries are a counter-based hash
   of (round seed, node, GPU UUID, row, column): ``a_rows`` / ``b_columns``
   regenerate any rows or columns, so a verifier computes any one entry of
   C = A x B in O(k), and the prover generates blocks of A and B where it
   computes (on the GPU) without storing or sending them.
2. Sizes from the claimed model's datasheet throughput (``size_for``): about
   TARGET_S seconds of dense FP16 tensor-core work at its peak, with C
   taking up to MEMORY_SHARE of the claimed memory.
3. The host commits to C with a Merkle root over its chunks of
   CHUNK_ENTRIES consecutive entries in row-major order (``chunk_leaves``,
   ``merkle_levels``) before the deadline (``Size.budget_s`` plus the measured
   round trip); only then does the verifier name entries at independent
   random places (``choose_entries``). The host opens the chunks holding
   those entries (``checked_leaves``) with their Merkle paths
   (``opening`` records); ``judge`` checks each path against the root and
   recomputes the named entries in float64, within ``tolerance``. The same
   records are stored and published whole, so ``fleetscope verify`` re-runs
   ``judge`` on them.

Entries are multiples of 2**-10 in [-1, 1): exact in FP16 and TF32, so any
tensor-core GEMM with FP32 accumulation computes C to within a few FP32
rounding errors, while INT8 or FP8 units cannot hold them (no shortcut at a
faster integer rate) and FP16 accumulation misses the tolerance.

Everything here is pure and deterministic: the collector judges with it, the
exporter proves with it, and ``fleetscope verify`` re-checks published proofs
with it, with no database.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fleetscope.gpu_models import GpuModel

PROTOCOL_VERSION = 1
# Work per GPU: about this long at the claimed model's datasheet peak. Long
# enough that fixed costs (launch, generating A and B, hashing C) and the
# network are small beside it; short enough to cost a host little (docs/proof.md).
TARGET_S = 2.0
# The deadline lets an honest card reach this share of its datasheet peak:
# large cuBLAS GEMMs reach 0.65-0.95 of it on A100, H100 and GeForce cards.
# A card under this share of the claimed model's peak (a T4 claiming an A100:
# 0.21; an RTX 4090 claiming one: 0.53), or one GPU proving for two claimed
# (at most 0.5 each), runs out of time.
MIN_EFFICIENCY = 0.6
# Fixed allowance for generating A and B, hashing C's chunks and sending the root.
OVERHEAD_S = 0.5
# The round trip measured between offering a challenge and the host asking for
# its seed is added to the deadline, but never more than this: a host that
# answers the offer slowly on purpose cannot buy itself more time.
MAX_RTT_S = 1.0
# An offer whose host has not asked for its seed this long after it is closed as no answer.
START_TIMEOUT_S = 10.0
# A host has this long after its commitment to open the entries named in reply.
OPEN_TIMEOUT_S = 30.0
# C (FP32) takes at most this share of the claimed memory, leaving room for
# blocks of A and B and the framework's own buffers.
MEMORY_SHARE = 0.5
# n and k are multiples of this: n so that C is whole chunks (CHUNK_ENTRIES).
SIZE_STEP = 256
MIN_SIZE = 256
# Entries the verifier names after the commitment, each at an independent
# random (row, column): the host opens their chunks. Garbage fails every
# check; a host that computed any share f of C (whole rows, whole columns or
# scattered entries) passes one round with probability f ** CHECKED_ENTRIES
# at most (f = 0.9: 0.43; f = 0.5: 0.004), and one failure flags the GPU
# until it passes again. (A grid of 2 rows x 4 columns, the first cut, let a
# host computing a share f of the rows pass with f ** 2: found in review.)
CHECKED_ENTRIES = 8
# |C[i,j] - exact| <= TOLERANCE_FACTOR * 2**-11 * sqrt(k) / 3: four FP16
# units of C's typical size (an entry of A or B has an RMS of about 1/sqrt(3),
# so C's entries have one of sqrt(k) / 3). FP32 accumulation in any order errs
# by thousands of times less (measured: 3e-5 of 0.09 at k = 76,000), and so
# does rounding C to FP16 at the end (a tensor-core GEMM with FP16 output);
# FP16 accumulation (twice as fast on GeForce cards) errs by several units, and
# leaving out even 4 in a million of the products by more than the tolerance.
TOLERANCE_FACTOR = 4.0
TOLERANCE_UNIT = 2.0 ** -11
# A GPU stays verified this long after a passed proof (DESIGN.md).
VERIFIED_FOR = timedelta(hours=24)
# The collector never asks more than this share of a GPU's day (DESIGN.md: 1 %).
MAX_SHARE_OF_DAY = 0.01
DOMAIN = b"fleetscope-proof-v1"
SEED_BYTES = 32
# Entries: the top 11 bits of the hash, centred: integers in [-1024, 1023] x 2**-10.
_VALUE_SHIFT = 21
_VALUE_OFFSET = 1024
_VALUE_SCALE = 2.0 ** -10
_GOLDEN = 0x9E3779B1
_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35  # MurmurHash3's 32-bit finaliser

VERDICTS = ("passed", "failed", "no_answer")


# -- the matrices -------------------------------------------------------------------

def new_seed() -> str:
    """A fresh, unpredictable round seed (hex)."""
    return secrets.token_hex(SEED_BYTES)


def keys(seed: str, node_id: int, gpu_uuid: str) -> tuple[int, int, int, int]:
    """The four 32-bit keys of one GPU's matrices in one round.

    The node is part of the key: two nodes claiming one UUID get different
    work, so neither can hand the other its answer.
    """
    digest = hashlib.sha256(DOMAIN + bytes.fromhex(seed) + b"\0" + str(node_id).encode()
                            + b"\0" + gpu_uuid.encode()).digest()
    k0, k1, k2, k3 = (int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))
    return k0, k1, k2, k3


def fmix32(x: Any, xp: Any = np) -> Any:
    """MurmurHash3's finaliser on a uint32 array, in place; returns it. ``xp``: numpy or cupy."""
    x ^= x >> xp.uint32(16)
    x *= xp.uint32(_M1)
    x ^= x >> xp.uint32(13)
    x *= xp.uint32(_M2)
    x ^= x >> xp.uint32(16)
    return x


def lane_keys(indices: Any, key: int, xp: Any = np) -> Any:
    """Per-index keys: fmix32(index * golden + key) for a uint32 index array (a new array)."""
    x = indices.astype(xp.uint32) * xp.uint32(_GOLDEN)
    x += xp.uint32(key)
    return fmix32(x, xp)


def entry_bits(row_keys: Any, col_keys: Any, xp: Any = np) -> Any:
    """The block of entries' 11-bit codes: the top 11 bits of fmix32(row_key ^ col_key), uint32 in [0, 2047].

    fmix32 but its last step, x ^= x >> 16, which leaves the top 16 bits as
    they are: the same codes for a quarter less work (the verifier's hot
    loop, and the prover's).
    """
    x = row_keys[:, None] ^ col_keys[None, :]
    x ^= x >> xp.uint32(16)
    x *= xp.uint32(_M1)
    x ^= x >> xp.uint32(13)
    x *= xp.uint32(_M2)
    x >>= xp.uint32(_VALUE_SHIFT)
    return x


def values(row_keys: Any, col_keys: Any, dtype: Any = np.float32, xp: Any = np) -> Any:
    """The block of entries: (code - 1024) x 2**-10, in [-1, 1) (``entry_bits``)."""
    out = entry_bits(row_keys, col_keys, xp).astype(dtype)
    out -= _VALUE_OFFSET
    out *= _VALUE_SCALE
    return out


def a_rows(key: tuple[int, int, int, int], rows: Any, k: int, *, dtype: Any = np.float32, xp: Any = np) -> Any:
    """Rows ``rows`` of A (len(rows) x k)."""
    return values(lane_keys(xp.asarray(rows), key[0], xp), lane_keys(xp.arange(k), key[1], xp), dtype, xp)


def a_block(key: tuple[int, int, int, int], rows: Any, cols: Any, *, dtype: Any = np.float32, xp: Any = np) -> Any:
    """A[rows][:, cols]: the prover's blocks of A."""
    return values(lane_keys(xp.asarray(rows), key[0], xp), lane_keys(xp.asarray(cols), key[1], xp), dtype, xp)


def b_block(key: tuple[int, int, int, int], rows: Any, cols: Any, *, dtype: Any = np.float32, xp: Any = np) -> Any:
    """B[rows][:, cols]: the prover's blocks of B (rows index the inner dimension)."""
    return values(lane_keys(xp.asarray(rows), key[2], xp), lane_keys(xp.asarray(cols), key[3], xp), dtype, xp)


def b_columns(key: tuple[int, int, int, int], cols: Any, k: int, *, dtype: Any = np.float32, xp: Any = np) -> Any:
    """Columns ``cols`` of B (k x len(cols))."""
    return b_block(key, xp.arange(k), cols, dtype=dtype, xp=xp)


# -- sizes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Size:
    """One GPU's work: C = A (n x k) x B (k x n), and its time limits."""

    n: int
    k: int
    reference_tflops: float  # the claimed model's FP16 tensor peak, times the scale
    budget_s: float           # commit deadline after the seed, before the round trip is added

    @property
    def flops(self) -> float:
        return 2.0 * self.n * self.n * self.k

    @property
    def expected_s(self) -> float:
        """Seconds at the claimed model's peak."""
        return self.flops / (self.reference_tflops * 1e12)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "k": self.k, "reference_tflops": self.reference_tflops, "budget_s": self.budget_s}


def size_for(model: GpuModel, *, memory_bytes: int | None = None, scale: float = 1.0) -> Size:
    """The work for one GPU claiming ``model``: about TARGET_S at its peak, C within MEMORY_SHARE of memory.

    ``scale`` multiplies the reference throughput (and memory by
    scale ** (2/3), so that the shape of the work stays the same): 1 in
    production; the simulator and the tests prove on CPUs with a tiny scale.
    ``memory_bytes`` is the claimed memory (default the model's).
    """
    ref = model.fp16_tensor_tflops * 1e12 * scale
    memory = (memory_bytes or model.memory_bytes) * scale ** (2.0 / 3.0)
    work = TARGET_S * ref
    n_time = (work / 2.0) ** (1.0 / 3.0)
    n_mem = math.sqrt(MEMORY_SHARE * memory / 4.0)
    n = max(MIN_SIZE, int(min(n_time, n_mem)) // SIZE_STEP * SIZE_STEP)
    k = max(n, math.ceil(work / (2.0 * n * n) / SIZE_STEP) * SIZE_STEP)
    flops = 2.0 * n * n * k
    return Size(n=n, k=k, reference_tflops=ref / 1e12, budget_s=round(flops / (ref * MIN_EFFICIENCY) + OVERHEAD_S, 6))


def deadline_s(size: Size, rtt_s: float) -> float:
    """Seconds after the seed is sent by which the commitment must arrive."""
    return size.budget_s + min(max(rtt_s, 0.0), MAX_RTT_S)


def seconds_of(*, offered_at: datetime, committed_at: datetime, rtt_s: float | None) -> float:
    """A proof's seconds: from the offer to the commitment, less the round trip as counted (at most MAX_RTT_S)."""
    return (committed_at - offered_at).total_seconds() - min(max(rtt_s or 0.0, 0.0), MAX_RTT_S)


# -- the commitment -------------------------------------------------------------------

# C is committed as a Merkle tree over chunks of CHUNK_ENTRIES consecutive
# entries of a row (1 KiB), in row-major order: an opened entry costs its
# chunk and a path (about 3 KiB on the wire for an H100's C) instead of its
# 400 KiB row, so every opening is cheap to check, store and publish whole.
# n is a multiple of it (SIZE_STEP), so C's bytes are whole chunks end to end.
CHUNK_ENTRIES = 256
CHUNK_BYTES = CHUNK_ENTRIES * 4


def leaf_hash(chunk: bytes) -> bytes:
    """A leaf: SHA-256 of 0x00 and the chunk's bytes (RFC 6962's domain separation)."""
    return hashlib.sha256(b"\0" + chunk).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\1" + left + right).digest()


def leaf_count(n: int) -> int:
    """Leaves of an n x n C."""
    return n * n // CHUNK_ENTRIES


def leaf_of(i: int, j: int, n: int) -> int:
    """The leaf holding C[i, j]."""
    return (i * n + j) // CHUNK_ENTRIES


def chunk_leaves(c: Any) -> list[bytes]:
    """Every leaf of C (an n x n array; float32 as committed, little-endian), in order. The CPU prover's."""
    data = np.ascontiguousarray(c, dtype="<f4").tobytes()
    return [leaf_hash(data[o:o + CHUNK_BYTES]) for o in range(0, len(data), CHUNK_BYTES)]


def merkle_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first; an odd last node is carried up unchanged."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        up = [_node(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            up.append(below[-1])
        levels.append(up)
    return levels


def merkle_path(levels: list[list[bytes]], index: int) -> list[bytes]:
    """The siblings from leaf ``index`` up to the root (levels where it has none are skipped)."""
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def root_from_path(leaf: bytes, index: int, count: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``leaf`` at ``index`` of ``count`` leaves and ``path`` imply; None if the path's length is wrong."""
    if not 0 <= index < count:
        return None
    node, width, used = leaf, count, 0
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if used >= len(path):
                return None
            node = _node(node, path[used]) if index % 2 == 0 else _node(path[used], node)
            used += 1
        index //= 2
        width = (width + 1) // 2
    return node if used == len(path) else None


# -- the challenge and the judgement ----------------------------------------------------

def choose_entries(n: int, rng: secrets.SystemRandom | None = None) -> tuple[list[int], list[int]]:
    """The entries the host must open: (rows, columns), entry m being C[rows[m], columns[m]].

    CHECKED_ENTRIES of them, in distinct rows, each column drawn on its own;
    unpredictable, and told to the host only after its commitment, which
    already binds every entry of C.
    """
    rng = rng or secrets.SystemRandom()
    rows = sorted(rng.sample(range(n), min(CHECKED_ENTRIES, n)))
    return rows, [rng.randrange(n) for _ in rows]


def tolerance(k: int) -> float:
    """How far an entry of C may be from its exact value (TOLERANCE_FACTOR's comment)."""
    return TOLERANCE_FACTOR * TOLERANCE_UNIT * math.sqrt(k) / 3.0


# Entries of the inner dimension the verifier takes at once: 16 x 8,192 int32 stay in cache.
VERIFY_BLOCK = 8_192


def expected_entries(key: tuple[int, int, int, int], k: int, rows: Sequence[int],
                     cols: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """C[rows[m], cols[m]] for each m in float64, and each one's tolerance. O(len(rows) x k).

    The verifier's hot path (bench/bench_proof.py): entries as the integers
    code - 1024 in int32 (a product fits in 21 bits, a row's sum in int64),
    B's columns generated as rows so both operands are contiguous, one
    scaling of the sums at the end, and the inner dimension taken in blocks
    of VERIFY_BLOCK so that every pass stays in the CPU's cache (at k =
    100,000: 6.1 ms in float64 over whole rows, 3.2 ms like this).
    """
    row_keys = lane_keys(np.asarray(rows, dtype=np.uint32), key[0])
    # B[t, j] = f(lane(t, k2) ^ lane(j, k3)): XOR is symmetric, so these are B's columns as rows.
    col_keys = lane_keys(np.asarray(cols, dtype=np.uint32), key[3])
    sums = np.zeros(len(rows), dtype=np.int64)
    for start in range(0, k, VERIFY_BLOCK):
        inner = np.arange(start, min(k, start + VERIFY_BLOCK), dtype=np.uint32)
        a = entry_bits(row_keys, lane_keys(inner, key[1])).view(np.int32)
        a -= _VALUE_OFFSET
        b_t = entry_bits(col_keys, lane_keys(inner, key[2])).view(np.int32)
        b_t -= _VALUE_OFFSET
        a *= b_t
        sums += a.sum(axis=1, dtype=np.int64)
    exact = sums * (_VALUE_SCALE * _VALUE_SCALE)
    return exact, np.full(exact.shape, tolerance(k))


@dataclass(frozen=True)
class Verdict:
    """The outcome of one GPU's proof."""

    verdict: str                 # one of VERDICTS
    reason: str                  # why it failed or was not answered; "" when it passed
    seconds: float | None = None  # from the seed to the commitment, less the round trip
    tflops: float | None = None   # the work over those seconds: a lower bound on the GPU's speed

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "seconds": self.seconds, "tflops": self.tflops}


def late(size: Size, *, seconds: float, deadline: float) -> Verdict:
    return Verdict("failed", f"late: committed {seconds:.3f} s after the seed, the deadline was "
                             f"{deadline:.3f} s (the claimed model at {MIN_EFFICIENCY:.0%} of its peak)",
                   seconds, size.flops / max(seconds, 1e-9) / 1e12)


def checked_leaves(n: int, rows: Sequence[int], cols: Sequence[int]) -> list[int]:
    """The leaves a host must open for the named entries C[rows[m], cols[m]] (each once, ascending)."""
    return sorted({leaf_of(i, j, n) for i, j in zip(rows, cols, strict=True)})


def opening(leaf: int, chunk: bytes, path: Sequence[bytes]) -> dict[str, Any]:
    """One opened leaf as the wire, the database and the bundle carry it: its index, chunk (base64), path (hex)."""
    return {"leaf": leaf, "chunk": base64.b64encode(chunk).decode(), "path": [p.hex() for p in path]}


def judge(key: tuple[int, int, int, int], size: Size, *, root: bytes, rows: Sequence[int], cols: Sequence[int],
          openings: Sequence[dict[str, Any]], seconds: float, deadline: float) -> Verdict:
    """The verdict on one GPU's proof: on time, every named entry's chunk in the commitment, every entry right.

    ``openings`` are ``opening`` records (the collector's, as received, or a
    bundle's, as published); ``seconds`` is from the offer to the commitment,
    less the round trip as counted (``seconds_of``); ``deadline`` is the
    size's budget. Every record must lead to ``root``, whether or not it
    holds a checked entry.
    """
    if seconds > deadline:
        return late(size, seconds=seconds, deadline=deadline)
    tflops = size.flops / max(seconds, 1e-9) / 1e12
    count = leaf_count(size.n)
    chunks: dict[int, np.ndarray] = {}
    for record in openings:
        try:
            leaf = int(record["leaf"])
            chunk = base64.b64decode(record["chunk"], validate=True)
            path = [bytes.fromhex(p) for p in record["path"]]
        except (KeyError, TypeError, ValueError):
            return Verdict("failed", "an opening is malformed (leaf, chunk in base64, path in hex)", seconds, tflops)
        if len(chunk) != CHUNK_BYTES:
            return Verdict("failed", f"leaf {leaf}'s chunk has {len(chunk)} bytes, expected {CHUNK_BYTES}",
                           seconds, tflops)
        if root_from_path(leaf_hash(chunk), leaf, count, path) != root:
            return Verdict("failed", f"leaf {leaf} does not match the commitment", seconds, tflops)
        chunks[leaf] = np.frombuffer(chunk, dtype="<f4")
    if len(rows) != len(cols):
        return Verdict("failed", "the named entries are malformed", seconds, tflops)
    got = np.empty(len(rows), dtype=np.float64)
    for m, (i, j) in enumerate(zip(rows, cols, strict=True)):
        chunk = chunks.get(leaf_of(i, j, size.n))
        if chunk is None:
            return Verdict("failed", f"C[{i},{j}] was not opened", seconds, tflops)
        got[m] = chunk[(i * size.n + j) % CHUNK_ENTRIES]
    problem = wrong_entry(key, size.k, rows, cols, got)
    return Verdict("failed", problem, seconds, tflops) if problem else Verdict("passed", "", seconds, tflops)


def wrong_entry(key: tuple[int, int, int, int], k: int, rows: Sequence[int], cols: Sequence[int],
                got: np.ndarray) -> str:
    """Why ``got`` (entry m: C[rows[m], cols[m]]) are not C's entries, or "" when all are within tolerance."""
    exact, tolerance = expected_entries(key, k, rows, cols)
    bad = ~(np.abs(got - exact) <= tolerance)  # NaN is bad
    if not bad.any():
        return ""
    m = int(np.argmax(bad))
    return (f"wrong result: C[{rows[m]},{cols[m]}] = {float(got[m])!r}, expected {exact[m]:.6f} "
            f"within {tolerance[m]:.6f} ({int(bad.sum())} of {bad.size} checked entries wrong)")


def parameters() -> dict[str, Any]:
    """The protocol's published parameters (the methodology page and the data bundle)."""
    return {
        "protocol_version": PROTOCOL_VERSION, "target_s": TARGET_S, "min_efficiency": MIN_EFFICIENCY,
        "overhead_s": OVERHEAD_S, "max_rtt_s": MAX_RTT_S, "start_timeout_s": START_TIMEOUT_S,
        "open_timeout_s": OPEN_TIMEOUT_S,
        "memory_share": MEMORY_SHARE, "size_step": SIZE_STEP, "checked_entries": CHECKED_ENTRIES, "chunk_entries": CHUNK_ENTRIES, "tolerance": "4 x 2^-11 x sqrt(k) / 3",
        "verified_for_h": VERIFIED_FOR.total_seconds() / 3600, "max_share_of_day": MAX_SHARE_OF_DAY,
    }


# -- what "verified" means -------------------------------------------------------------

# The integrity finding a GPU claim's failed latest proof opens (and its next
# pass resolves): collector/proof_verdicts.py keeps it.
FAILED_FINDING_KIND = "proof_failed"

# A GPU claim (node, UUID) with a passed proof in (at - VERIFIED_FOR, at] is proved:
# what the snapshot, the explorer and reputation count as verified unless a
# finding flags the GPU (a failed proof opens one: proof_failed).
# PROVED_WHERE is the rule on one proof_challenges row (aliased p).
PROVED_WHERE = "p.verdict = 'passed' AND p.decided_at > %(at)s - interval '24 hours' AND p.decided_at <= %(at)s"
# The proved claims, as the rule reads (the methodology page shows it).
PROVED_SQL = f"SELECT DISTINCT p.node_id, p.gpu_uuid FROM proof_challenges p WHERE {PROVED_WHERE}"
# The rule as a condition on one gpus row (aliased g), from the claim's
# latest pass (gpus.last_passed_at, kept by a trigger on proof_challenges):
# a pass at or before %(at)s is the latest one by then, so the claim is proved
# iff it is within 24 h; only when its latest pass is after %(at)s (a
# historical as-of time) are the passes looked up. At the current tick that is
# one column compare per claim instead of aggregating the day's passes
# (100 ms at 80,000 GPUs: bench/bench_snapshot.py).
PROVED_CLAIM_SQL = (
    "(g.last_passed_at IS NOT NULL AND CASE WHEN g.last_passed_at <= %(at)s"
    " THEN g.last_passed_at > %(at)s - interval '24 hours'"
    " ELSE EXISTS (SELECT 1 FROM proof_challenges p WHERE p.node_id = g.node_id AND p.gpu_uuid = g.gpu_uuid"
    f" AND {PROVED_WHERE}) END)")


def proved(passed_at: Sequence[datetime], at: datetime) -> bool:
    """Whether a claim with passes at ``passed_at`` counts as proved at ``at`` (PROVED_CLAIM_SQL's rule)."""
    return any(at - VERIFIED_FOR < t <= at for t in passed_at)

