"""The Methodology page's content, generated from the code that computes every number.

Each definition is described by the docstrings, constants, functions and SQL
that implement it, read from those very objects at run time: the page cannot
drift from the code, and a change to a definition shows up on the page with
its version.
"""

from __future__ import annotations

import inspect
from typing import Any

from fleetscope import accounting, explorer, proof, registry, reputation, snapshot, states, uptime
from fleetscope import gpu_models, integrity
from fleetscope.integrity import (cloned_telemetry, duplicate_uuid, fleet_jump, identity_change, spec_mismatch,
                                  virtualized)


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def _code(*functions: Any) -> list[dict[str, str]]:
    return [{"name": f"{f.__module__}.{f.__qualname__}", "source": inspect.getsource(f)} for f in functions]


def _sql(**statements: str) -> list[dict[str, str]]:
    return [{"name": name, "source": inspect.cleandoc(text)} for name, text in statements.items()]


# What "verified" means since issue 14 (DESIGN.md, "Proof of GPU"): before
# it, a GPU was "verified" once the integrity checks had examined what it
# reported, and anything a host reports can be forged.
VERIFICATION_TEXT = (
    "**Verification.** A GPU claim is **verified** when it passed a proof of GPU (see *Proof of GPU*) in the "
    "last 24 hours and nothing flags it; **flagged** when an open integrity finding names its UUID (on any node) "
    "or its whole node (a node that reports a UUID another node claimed first gets a node-wide duplicate_uuid "
    "finding: the first claimant keeps its standing, the cloner is flagged), including **proof_failed**, "
    "which is opened when the GPU's latest proof failed and closed "
    "by its next pass; **unverified** otherwise: never challenged (a host scraped only, or running plain "
    "dcgm-exporter, has no prover; a model missing from the reference table is not challenged), no answer, or "
    "its latest pass is more than 24 hours old. What a host reports about itself (model, memory, UUID) never "
    "makes a GPU verified: it can be forged. Reputation's V reads these three states.")
VERIFICATION_FORMULA = ("verified = passed a proof of GPU in (t - 24 h, t] and not flagged; flagged = an open "
                        "finding (incl. proof_failed); unverified = otherwise")
PROOF_FAILED_TEXT = (
    "**proof_failed**: the GPU's latest proof of GPU failed (late, a wrong entry, a row not matching its "
    "commitment, or not opened). Opened by the collector with the verdict, with the round and the reason as "
    "evidence, and resolved by the GPU's next passed proof. Not a check of its own: the collector's proof rounds "
    "(see *Proof of GPU*) open and close it.")
PROOF_DOC = "docs/proof.md"


def proof_of_gpu() -> dict[str, Any]:
    """The proof of GPU (fleetscope/proof.py): the protocol in words, its parameters and its work per model."""
    p = proof.parameters()
    text = f"""\
A GPU is verified only by work it did: an open challenge that only a real, present GPU about as fast as its
claimed model answers in time. Everything a host reports about itself can be forged; this cannot, short of
doing the work.

1. **Rounds.** At random times (a random gap around the proof interval, an hour by default) the collector
   opens a round for a random share of the nodes whose prover is waiting, all at the same instant, and
   challenges every claimed GPU of a chosen node at once. Simultaneity is the point: one real GPU cannot answer
   for several claimed ones, nor relay for another node in the same round. A node with a running job is never
   proved, and proofs never take more than {p['max_share_of_day']:.0%} of a GPU's day.
2. **Work.** Per GPU, matrices A (n x k) and B (k x n) whose entries are a counter-based hash of the round's
   seed, the node id, the GPU UUID, the row and the column (MurmurHash3's finaliser over keys from
   SHA-256), multiples of `2^-10` in `[-1, 1)`: anyone can regenerate any single entry in O(1). The host computes
   C = A x B.
3. **Size.** n and k are chosen so that `2 n^2 k` is about {p['target_s']:g} s of work at the claimed model's
   datasheet dense FP16 tensor-core TFLOPS (the `fp16_tensor_tflops` column of the GPU model table), with C
   taking at most {p['memory_share']:.0%} of the claimed memory. The table below gives each model's work.
4. **Commit.** The host sends the Merkle root over C's chunks of {p['chunk_entries']} consecutive entries in row-major
   order (SHA-256, leaves `0x00 || chunk`, nodes `0x01 || left || right`) before the deadline:
   `work / (claimed peak x {p['min_efficiency']}) + {p['overhead_s']:g} s`, plus the measured round trip up to
   {p['max_rtt_s']:g} s, counted from the round's offer.
5. **Open.** Only then does the collector name {p['checked_entries']} entries, each at an independent random place;
   the host opens the chunks holding those entries with their Merkle paths (within {p['open_timeout_s']:g} s).
   The collector checks each path against the root and recomputes the named entries in float64 in O(k) each.
   An entry is right when `|C[i,j] - exact| <= 4 x 2^-11 x sqrt(k) / 3`: four FP16 units of C's typical entry,
   `sqrt(k) / 3`.
6. **Verdict** per GPU: **passed** (with the seconds from the offer to the commitment, less the round trip,
   and the TFLOPS they imply), **failed** (late, wrong, not matching the commitment, not opened: it opens a
   proof_failed finding), or **no answer** (the host never asked for its seed).

A GPU is **verified** when it passed within the last {p['verified_for_h']:g} h and is not flagged; **flagged**
when an open finding names it, including proof_failed; **unverified** otherwise. A host scraped only or running
plain dcgm-exporter has no prover: its GPUs are counted, never verified. fleetscope-exporter proves when it
pushes (`--no-prove` turns it off).

Every round's seed and every verdict are published in the data bundle, with the commitments and openings of
the last hour, and `fleetscope verify BUNDLE` re-checks them from the bundle alone. The whole protocol, its
wire format and its threat model (what each attack costs, and what the proof does not catch, such as memory
size, or a slower card that still reaches {p['min_efficiency']:.0%} of the claimed model's peak) are in {PROOF_DOC} in
fleetscope's source."""
    rows = []
    for m in gpu_models.models():
        if not m.fp16_tensor_tflops:
            continue
        size = proof.size_for(m)
        rows.append({"model": m.model, "fp16_tensor_tflops": m.fp16_tensor_tflops, "memory_gib": m.memory_gib,
                     "n": size.n, "k": size.k, "tflop": round(size.flops / 1e12, 1), "budget_s": size.budget_s})
    return {
        "id": "proof-of-gpu", "title": "Proof of GPU (what verified means)", "version": proof.PROTOCOL_VERSION,
        "text": text,
        "formula": f"budget_s = 2 n^2 k / (peak x {p['min_efficiency']}) + {p['overhead_s']:g} s + round trip "
                   f"(<= {p['max_rtt_s']:g} s); right when |C[i,j] - exact| <= 4 x 2^-11 x sqrt(k) / 3",
        "constants": p,
        "parameters": p,
        "docs": PROOF_DOC,
        "models": rows,
        "code": _code(proof.keys, proof.lane_keys, proof.values, proof.size_for, proof.deadline_s, proof.leaf_hash,
                      proof.merkle_levels, proof.tolerance, proof.judge, proof.proved),
        "sql": _sql(PROVED_SQL=proof.PROVED_SQL),
    }


def definitions() -> list[dict[str, Any]]:
    """Every definition: id, title, version, text, formula, constants, code and SQL."""
    return [
        {
            "id": "node-state", "title": "Node interval, grace and state", "version": states.DEFINITION_VERSION,
            "text": "\n\n".join([_doc(states), _doc(states.node_status), _doc(states.node_online),
                                 _doc(states.default_grace_s)]),
            "formula": "online(t) = a successful observation in (t - grace, t]",
            "constants": {"DEFAULT_INTERVAL_S": states.DEFAULT_INTERVAL_S,
                          "GRACE_INTERVALS": states.GRACE_INTERVALS,
                          "states": [s.value for s in states.NodeStatus]},
            "code": _code(states.node_status, states.node_online, states.default_grace_s),
            "sql": _sql(NODE_ONLINE_SQL=states.NODE_ONLINE_SQL, NODE_STATE_SQL=states.NODE_STATE_SQL),
        },
        {
            "id": "gpu-state", "title": "GPU online, hired, idle and offline; verification",
            "version": states.DEFINITION_VERSION,
            "text": "\n\n".join([_doc(explorer.gpu_state), _doc(explorer.verification),
                                 "A GPU is online when its node is online and the GPU was in the node's latest "
                                 "successful observation without an error or lost flag. A running job hires "
                                 "gpu_count of its node's GPUs, online ones first. GPUs are counted by distinct "
                                 "UUID: a UUID claimed by several nodes is one GPU (and an integrity finding). "
                                 "registered = online + offline; online = hired + idle; hired_offline is part "
                                 "of offline; registered = verified + unverified + flagged.",
                                 VERIFICATION_TEXT]),
            "formula": "hired = min(J, online GPUs of the node); hired_offline = min(J - online, offline); "
                       + VERIFICATION_FORMULA,
            "constants": {"VERIFIED_FOR": str(proof.VERIFIED_FOR)},
            "code": _code(explorer.gpu_state, explorer.verification, proof.proved),
            "sql": _sql(COUNTS_SQL=snapshot.COUNTS_SQL, GPU_CLAIMS_SQL=explorer.GPU_CLAIMS_SQL,
                        PROVED_SQL=proof.PROVED_SQL),
        },
        proof_of_gpu(),
        {
            "id": "uptime", "title": "Uptime over a window", "version": uptime.UPTIME_VERSION,
            "text": "\n\n".join([_doc(uptime), _doc(uptime.slot_range)]),
            "formula": "uptime = ok slots / observed slots (slots from the node's first report on, while "
                       "fleetscope observed)",
            "constants": {"FIRST_REPORT": "the node's earliest successful observation"},
            "code": _code(uptime.slot_of, uptime.slot_range, uptime.Uptime),
            "sql": _sql(FIRST_REPORT_SQL=uptime.FIRST_REPORT_SQL, UPTIME_SQL=uptime.UPTIME_SQL),
        },
        {
            "id": "pause", "title": "Paused nodes", "version": states.DEFINITION_VERSION,
            # set_paused's docstring past its first line (what the call returns): what a pause means.
            "text": _doc(registry.set_paused).split("\n\n", 1)[1],
            "formula": "paused: no alert deadline; counts, uptime and reputation unchanged",
            "constants": {},
            "code": [],
            "sql": _sql(SET_PAUSED_SQL=registry.SET_PAUSED_SQL),
        },
        {
            "id": "accounting", "title": "GPU-hours and accrued revenue", "version": states.DEFINITION_VERSION,
            "text": "\n\n".join([_doc(accounting), _doc(accounting.accrual), _doc(accounting.job_accrual)]),
            "formula": "GPU-hours = sum over jobs of gpu_count x hours of overlap with the window; "
                       "revenue = the same x price_per_gpu_hour",
            "constants": {"DECIMALS": accounting.DECIMALS, "last_24h": str(snapshot.LAST_24H)},
            "code": _code(accounting.job_accrual),
            "sql": _sql(WINDOW_SQL=accounting.WINDOW_SQL),
        },
        {
            "id": "reputation", "title": "Reputation", "version": reputation.FORMULA_VERSION,
            "text": "\n\n".join([_doc(reputation), _doc(reputation.job_success_ratio),
                                 _doc(reputation.verification_factor), _doc(reputation.reputation_score)]),
            "formula": reputation.FORMULA,
            "constants": {"WEIGHT_U7": reputation.WEIGHT_U7, "WEIGHT_U1": reputation.WEIGHT_U1,
                          "WEIGHT_J": reputation.WEIGHT_J, "U7_WINDOW": str(reputation.U7_WINDOW),
                          "U1_WINDOW": str(reputation.U1_WINDOW), "JOBS_WINDOW": str(reputation.JOBS_WINDOW),
                          "SCORE_DECIMALS": reputation.SCORE_DECIMALS},
            "code": _code(reputation.job_success_ratio, reputation.verification_factor,
                          reputation.reputation_score, reputation.reputation_of),
            "sql": _sql(JOBS_SQL=reputation.JOBS_SQL, VERIFICATION_SQL=reputation.VERIFICATION_SQL),
        },
        {
            "id": "snapshot", "title": "The fleet snapshot and its consistency checks",
            "version": snapshot.SNAPSHOT_VERSION,
            "text": "\n\n".join([_doc(snapshot), _doc(snapshot.default_as_of), _doc(snapshot.canonical_json),
                                 _doc(snapshot.consistency_checks)]),
            "formula": "snapshot_sha256 = SHA-256(canonical JSON of the snapshot body)",
            "constants": {"SNAPSHOT_TICK_S": snapshot.SNAPSHOT_TICK_S, "SNAPSHOT_SETTLE_S": snapshot.SNAPSHOT_SETTLE_S,
                          "checks": list(snapshot.CHECKS)},
            "code": _code(snapshot.default_as_of, snapshot.canonical_json, snapshot.consistency_checks),
            "sql": _sql(HIRED_VS_ONLINE_SQL=snapshot.HIRED_VS_ONLINE_SQL),
        },
        {
            "id": "integrity", "title": "Integrity checks (fake, virtualised, copied and sybil GPUs)",
            "version": states.DEFINITION_VERSION,
            "text": "\n\n".join([_doc(integrity)] + [f"**{m.KIND}**: " + _doc(m) for m in _CHECKS]
                                  + [PROOF_FAILED_TEXT]),
            "formula": "a GPU with an open finding is flagged: never verified, and its node's V is 0",
            "constants": {f"{m.KIND}.{name}": getattr(m, name) for m in _CHECKS for name in dir(m)
                          if name.isupper() and not name.endswith("_SQL") and name not in ("KIND", "TYPE_CHECKING")
                          and isinstance(getattr(m, name), (int, float, str, tuple))}
                         | {f"fleet_jump.{k}": str(v) for k, v in vars(fleet_jump.JumpSettings()).items()}
                         | {f"gpu_models.{k}": getattr(gpu_models, k) for k in dir(gpu_models)
                            if k.isupper() and k != "TYPE_CHECKING"
                            and isinstance(getattr(gpu_models, k), (int, float, str, tuple))},
            "code": [],
            "sql": [{"name": f"{m.KIND}.{name}", "source": inspect.cleandoc(getattr(m, name))}
                    for m in _CHECKS for name in dir(m) if name.endswith("_SQL") and isinstance(getattr(m, name), str)],
        },
    ]


_CHECKS = (duplicate_uuid, virtualized, spec_mismatch, cloned_telemetry, identity_change, fleet_jump)
