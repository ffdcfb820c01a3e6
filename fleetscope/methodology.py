"""The Methodology page's content, generated from the code that computes every number.

Each definition is described by the docstrings, constants, functions and SQL
that implement it, read from those very objects at run time: the page cannot
drift from the code, and a change to a definition shows up on the page with
its version.
"""

from __future__ import annotations

import inspect
from typing import Any

from fleetscope import accounting, explorer, reputation, snapshot, states, uptime
from fleetscope import gpu_models, integrity
from fleetscope.integrity import (cloned_telemetry, duplicate_uuid, fleet_jump, identity_change, spec_mismatch,
                                  virtualized)


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def _code(*functions: Any) -> list[dict[str, str]]:
    return [{"name": f"{f.__module__}.{f.__qualname__}", "source": inspect.getsource(f)} for f in functions]


def _sql(**statements: str) -> list[dict[str, str]]:
    return [{"name": name, "source": inspect.cleandoc(text)} for name, text in statements.items()]


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
                                 "of offline; registered = verified + unverified + flagged."]),
            "formula": "hired = min(J, online GPUs of the node); hired_offline = min(J - online, offline)",
            "constants": {},
            "code": _code(explorer.gpu_state, explorer.verification),
            "sql": _sql(COUNTS_SQL=snapshot.COUNTS_SQL, GPU_CLAIMS_SQL=explorer.GPU_CLAIMS_SQL),
        },
        {
            "id": "uptime", "title": "Uptime over a window", "version": states.DEFINITION_VERSION,
            "text": _doc(uptime),
            "formula": "uptime = ok slots / observed slots (slots after registration, while fleetscope observed)",
            "constants": {},
            "code": _code(uptime.slot_of, uptime.slot_range, uptime.Uptime),
            "sql": _sql(UPTIME_SQL=uptime.UPTIME_SQL),
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
            "text": "\n\n".join([_doc(integrity)] + [f"**{m.KIND}**: " + _doc(m) for m in _CHECKS]),
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
