"""``fleetscope verify BUNDLE``: recompute the published numbers from a bundle alone and compare, number by number.

Nothing here reads a database. The recomputation uses fleetscope's own pure
definitions on the bundle's rows:

- node online: ``states.node_online`` on each node's latest successful
  observation and grace;
- GPU states, verification and models: DESIGN.md's per-UUID rules (a UUID
  claimed by several nodes is one GPU, online if any claim is; a running job
  covers ``gpu_count`` of its node's GPUs, online ones first, then by UUID in
  byte order; flagged by an open finding naming the UUID or the node;
  verified by a passed proof of GPU in the last 24 h: ``proof.proved``);
- GPU-hours and revenue: ``accounting.job_accrual`` per job, summed exactly
  and rounded as the database rounds (half away from zero, 6 places);
- uptime: the slot grid of ``uptime.slot_range``, slots outside every
  observing period left out;
- reputation: ``reputation.reputation_of``;
- proofs of GPU: every published verdict re-derived from its seed, sizes,
  times, commitment and openings (``proof.judge`` on the published opening
  records, as the collector judged them), saying what could not
  be re-checked.

It also checks the bundle's own integrity: each member's SHA-256 against the
manifest, the manifest's against ``published.json``, and the snapshot's hash
against its body. ``verify`` returns a ``Report``; the CLI prints it and
exits non-zero on any mismatch.
"""

from __future__ import annotations

import decimal
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetscope import accounting, bundle, gpu_models, proof, reputation, states
from fleetscope.snapshot import LAST_24H, canonical_json
from fleetscope.uptime import Uptime, slot_range

if TYPE_CHECKING:
    from collections.abc import Iterable

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Enough digits that summing 100,000 jobs' exact hours never rounds before the
# final rounding to accounting.DECIMALS places.
ACCRUAL_PRECISION = 60
# How many matching per-node numbers a report lists one by one before it
# summarises them (a 10,000-node bundle has 60,000 of them).
NODE_DETAIL_LIMIT = 20


@dataclass(frozen=True)
class Number:
    """One published number and its recomputation."""

    name: str
    published: Any
    recomputed: Any

    @property
    def ok(self) -> bool:
        return self.published == self.recomputed


@dataclass
class Report:
    """The outcome of verifying one bundle."""

    numbers: list[Number] = field(default_factory=list)
    integrity: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, ok, detail)
    published_sha256: str = ""

    @property
    def mismatches(self) -> list[Number]:
        return [n for n in self.numbers if not n.ok]

    @property
    def ok(self) -> bool:
        return not self.mismatches and all(ok for _, ok, _ in self.integrity)

    def lines(self, *, verbose: bool = False) -> list[str]:
        """The report as text, one number per line (per-node numbers summarised unless ``verbose``)."""
        out = [f"{'ok' if ok else 'MISMATCH'}  {what}: {detail}" for what, ok, detail in self.integrity]
        node_ok: dict[str, int] = defaultdict(int)
        for n in self.numbers:
            per_node = n.name.startswith("node ")
            if n.ok and per_node and not verbose:
                node_ok[n.name.split(" ", 2)[2]] += 1
                continue
            if n.ok:
                out.append(f"ok  {n.name} = {_show(n.published)}")
            else:
                out.append(f"MISMATCH  {n.name}: published {_show(n.published)}, recomputed {_show(n.recomputed)}")
        for what, count in node_ok.items():
            out.append(f"ok  {what}: all {count} nodes match")
        verdict = "verified: every number matches" if self.ok else (
            f"FAILED: {len(self.mismatches)} numbers do not match"
            + (f" ({', '.join(n.name for n in self.mismatches[:5])}"
               + (", ..." if len(self.mismatches) > 5 else "") + ")" if self.mismatches else "")
            + ("" if all(ok for _, ok, _ in self.integrity) else "; the bundle's hashes do not match"))
        out.append(f"published sha256 {self.published_sha256}")
        out.append(verdict)
        return out


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


# -- the definitions, on bundle rows ---------------------------------------------------------------------------


def _us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def _slot(t: datetime, interval_s: int) -> int:
    """floor(epoch / interval) exactly, as the SQL computes it in numeric."""
    return _us(t) // (interval_s * 1_000_000)


def _observed_ranges(periods: Iterable[tuple[datetime, datetime]], interval_s: int) -> list[tuple[int, int]]:
    """The slots in which fleetscope was observing, as merged ascending [first, last] ranges."""
    ranges = sorted((_slot(a, interval_s), _slot(b, interval_s)) for a, b in periods)
    merged: list[list[int]] = []
    for a, b in ranges:
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _clip(ranges: Iterable[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    return [(max(a, lo), min(b, hi)) for a, b in ranges if b >= lo and a <= hi]


def _overlap(xs: list[tuple[int, int]], ys: list[tuple[int, int]]) -> int:
    """Slots in both of two ascending lists of disjoint ranges."""
    total = i = j = 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if a <= b:
            total += b - a + 1
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return total


def uptime_from_slots(*, runs: list[tuple[int, int]], observed: list[tuple[int, int]], interval_s: int,
                      first_report_at: datetime | None, start: datetime, end: datetime) -> Uptime:
    """Uptime over [start, end) from ok-slot runs and observed-slot ranges (fleetscope/uptime.py's definition)."""
    k0, k1 = slot_range(start=start, end=end, interval_s=interval_s, first_report_at=first_report_at)
    if k1 < k0:
        return Uptime(window_slots=0, observed_slots=0, ok_slots=0)
    seen = _clip(observed, k0, k1)
    return Uptime(window_slots=k1 - k0 + 1, observed_slots=sum(b - a + 1 for a, b in seen),
                  ok_slots=_overlap(_clip(runs, k0, k1), seen))


def _open_findings(data: bundle.BundleData) -> list[bundle.Finding]:
    at = data.at
    return [f for f in data.findings if f.first_seen <= at and (f.resolved_at is None or f.resolved_at > at)]


def proved_claims(data: bundle.BundleData) -> set[tuple[int, str]]:
    """The (node, UUID) claims with a passed proof in the 24 h before the bundle's time (proof.PROVED_SQL)."""
    passed: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for p in data.proofs:
        if p.verdict == "passed":
            passed[(p.node_id, p.gpu_uuid)].append(p.decided_at)
    return {claim for claim, times in passed.items() if proof.proved(times, data.at)}


def node_reputations(data: bundle.BundleData) -> dict[int, reputation.Reputation]:
    """Every node's reputation as of the bundle's time, from its rows alone."""
    at = data.at
    proved = proved_claims(data)
    open_f = _open_findings(data)
    flagged_uuids = {f.gpu_uuid for f in open_f if f.gpu_uuid is not None}
    flagged_nodes = {f.node_id for f in open_f if f.gpu_uuid is None and f.node_id is not None}
    gpu_counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # verified, unverified, flagged
    for g in data.gpus:
        if g.first_seen > at:
            continue
        c = gpu_counts[g.node_id]
        if g.gpu_uuid in flagged_uuids or g.node_id in flagged_nodes:
            c[2] += 1
        elif (g.node_id, g.gpu_uuid) in proved:
            c[0] += 1
        else:
            c[1] += 1
    jobs: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # succeeded, finished
    since = at - reputation.JOBS_WINDOW
    for j in data.jobs:
        if j.status in ("succeeded", "failed") and j.ended_at is not None and since < j.ended_at <= at:
            jobs[j.node_id][1] += 1
            jobs[j.node_id][0] += j.status == "succeeded"
    observed: dict[int, list[tuple[int, int]]] = {}
    out = {}
    for node in data.nodes.values():
        if node.interval_s not in observed:
            observed[node.interval_s] = _observed_ranges(data.periods, node.interval_s)
        ups = {w: uptime_from_slots(runs=node.runs, observed=observed[node.interval_s], interval_s=node.interval_s,
                                    first_report_at=node.first_report, start=at - w, end=at)
               for w in (reputation.U7_WINDOW, reputation.U1_WINDOW)}
        verified, unverified, flagged = gpu_counts[node.node_id]
        succeeded, finished = jobs[node.node_id]
        out[node.node_id] = reputation.reputation_of(
            uptime_7d=ups[reputation.U7_WINDOW], uptime_24h=ups[reputation.U1_WINDOW], jobs_succeeded=succeeded,
            jobs_finished=finished, gpus_verified=verified, gpus_unverified=unverified, gpus_flagged=flagged)
    return out


def node_numbers(data: bundle.BundleData) -> dict[str, Any]:
    """The per-node numbers a bundle publishes (numbers.json): uptimes and reputation with its inputs."""
    return {"as_of": data.manifest["as_of"],
            "nodes": {str(node_id): rep.as_dict() for node_id, rep in sorted(node_reputations(data).items())}}


def _round(value: Decimal) -> float | int:
    """PostgreSQL's round(numeric, 6) (half away from zero), then the snapshot's JSON rendering."""
    q = value.quantize(Decimal(1).scaleb(-accounting.DECIMALS), rounding=decimal.ROUND_HALF_UP)
    return int(q) if q == q.to_integral_value() else float(q)


def fleet_numbers(data: bundle.BundleData) -> dict[str, Any]:
    """The snapshot's headline numbers, recomputed from the bundle, by their names in the snapshot."""
    at = data.at
    out: dict[str, Any] = {}
    online_nodes = {n.node_id: states.node_online(last_ok=n.last_ok, grace_s=n.grace_s, at=at)
                    for n in data.nodes.values()}
    out["nodes.registered"] = len(online_nodes)
    out["nodes.online"] = sum(online_nodes.values())
    out["nodes.offline"] = out["nodes.registered"] - out["nodes.online"]

    running: dict[int, int] = defaultdict(int)
    for j in data.jobs:
        if j.started_at <= at and (j.ended_at is None or j.ended_at > at):
            running[j.node_id] += j.gpu_count
    open_f = _open_findings(data)
    proved = proved_claims(data)
    flagged_uuids = {f.gpu_uuid for f in open_f if f.gpu_uuid is not None}
    flagged_nodes = {f.node_id for f in open_f if f.gpu_uuid is None and f.node_id is not None}
    claims_by_node: dict[int, list[bundle.Gpu]] = defaultdict(list)
    for g in data.gpus:
        if g.first_seen <= at and g.node_id in data.nodes:
            claims_by_node[g.node_id].append(g)
    # uuid -> [online, hired, covered, checked, flagged, model]
    per_uuid: dict[str, list[Any]] = {}
    for node_id, claims in claims_by_node.items():
        node = data.nodes[node_id]
        healthy, lost = set(node.healthy), set(node.lost)
        online = online_nodes[node_id]
        ranked = [(online and g.gpu_uuid in healthy and g.gpu_uuid not in lost, g) for g in claims]
        ranked.sort(key=lambda x: (not x[0], x[1].gpu_uuid.encode()))
        for rank, (gpu_online, g) in enumerate(ranked):
            covered = rank < running.get(node_id, 0)
            u = per_uuid.setdefault(g.gpu_uuid, [False, False, False, False, False, None])
            u[0] |= gpu_online
            u[1] |= gpu_online and covered
            u[2] |= covered
            u[3] |= (node_id, g.gpu_uuid) in proved
            u[4] |= g.gpu_uuid in flagged_uuids or node_id in flagged_nodes
            model = g.model or "unknown"
            u[5] = model if u[5] is None or model.encode() < u[5].encode() else u[5]
    counts = dict.fromkeys(("registered", "online", "offline", "hired", "hired_offline", "idle",
                            "verified", "unverified", "flagged"), 0)
    by_model: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for online, hired, covered, checked, flagged, model in per_uuid.values():
        counts["registered"] += 1
        counts["online" if online else "offline"] += 1
        counts["hired"] += hired
        counts["idle"] += online and not hired
        counts["hired_offline"] += (not online) and covered
        counts["flagged" if flagged else "verified" if checked else "unverified"] += 1
        m = by_model[model]
        m[0] += 1
        m[1] += online
        m[2] += hired
    for k, v in counts.items():
        out[f"gpus.{k}"] = v
    for model in sorted(by_model, key=str.encode):
        for i, k in enumerate(("registered", "online", "hired")):
            out[f"by_model[{model}].{k}"] = by_model[model][i]

    with decimal.localcontext() as ctx:
        ctx.prec = ACCRUAL_PRECISION
        for label, start in (("last_24h", at - LAST_24H), ("total", None)):
            hours = revenue = Decimal(0)
            for j in data.jobs:
                a = accounting.job_accrual(gpu_count=j.gpu_count, price_per_gpu_hour=j.price_per_gpu_hour,
                                           started_at=j.started_at, ended_at=j.ended_at, start=start, end=at)
                hours += a.gpu_hours
                revenue += a.revenue_usd
            out[f"gpu_hours.{label}"] = _round(hours)
            out[f"revenue_usd.{label}"] = _round(revenue)

    kinds: dict[str, int] = defaultdict(int)
    for f in open_f:
        kinds[f.kind] += 1
    out["integrity.open_findings"] = len(open_f)
    for kind in sorted(kinds):
        out[f"integrity.by_kind.{kind}"] = kinds[kind]
    return out


def published_fleet_numbers(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The same names, read from a published snapshot."""
    out: dict[str, Any] = {}
    for group in ("nodes", "gpus", "gpu_hours", "revenue_usd"):
        for k, v in snapshot.get(group, {}).items():
            out[f"{group}.{k}"] = v
    for m in snapshot.get("by_model", []):
        for k in ("registered", "online", "hired"):
            out[f"by_model[{m['model']}].{k}"] = m[k]
    integrity = snapshot.get("integrity", {})
    out["integrity.open_findings"] = integrity.get("open_findings")
    for kind, n in integrity.get("by_kind", {}).items():
        out[f"integrity.by_kind.{kind}"] = n
    return out


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k in sorted(value):
            _flatten(f"{prefix}.{k}" if prefix else k, value[k], out)
    else:
        out[prefix] = value


def _compare(published: dict[str, Any], recomputed: dict[str, Any], *, prefix: str = "") -> list[Number]:
    names = list(published) + [k for k in recomputed if k not in published]
    return [Number(f"{prefix}{name}", published.get(name), recomputed.get(name)) for name in names]


def proof_checks(data: bundle.BundleData) -> list[tuple[str, bool, str]]:
    """Each published proof's verdict re-derived from the bundle alone; (what, ok, detail) lines.

    A verdict with its openings is re-checked in full by ``proof.judge`` on
    the published records, exactly as the collector judged them: the work's
    size from the claimed model and the round's scale, the time against the
    deadline, every opened chunk hashed into its leaf and its Merkle path
    against the root, and the named entries against A and B regenerated from
    the round's seed. An older verdict (published without openings) is
    checked as far as its times allow. What could not be re-checked is said,
    never passed over.
    """
    out: list[tuple[str, bool, str]] = []
    full = timing = 0
    unchecked: list[str] = []
    for p in data.proofs:
        what = f"proof round {p.round_id} node {p.node_id} {p.gpu_uuid}"
        rnd = data.rounds.get(p.round_id)
        if rnd is None:
            out.append((what, False, "its round is not in the bundle"))
            continue
        model = gpu_models.lookup(p.model)
        if model is None:
            out.append((what, False, f"claimed model {p.model!r} is not in the reference table"))
            continue
        # Sized from the memory claimed when the round opened (recorded with the
        # proof), not the GPU's current report, which its host may change later.
        size = proof.size_for(model, memory_bytes=p.memory_total_bytes, scale=rnd.scale)
        if (size.n, size.k) != (p.n, p.k) or abs(size.budget_s - p.budget_s) > 1e-6:
            out.append((what, False, f"sized n={p.n} k={p.k} budget {p.budget_s} s, the protocol gives "
                                     f"n={size.n} k={size.k} budget {size.budget_s} s"))
            continue
        if p.verdict == "no_answer":
            timing += 1
            if p.openings is not None:
                out.append((what, False, "published no answer, yet it has openings"))
            continue
        if p.committed_at is None:
            # Started, never committed: late by definition.
            timing += 1
            if p.verdict != "failed":
                out.append((what, False, f"published {p.verdict} without a commitment"))
            continue
        seconds = proof.seconds_of(offered_at=p.offered_at, committed_at=p.committed_at, rtt_s=p.rtt_s)
        if p.openings is None or p.rows is None or p.columns is None:
            timing += 1
            if seconds > size.budget_s and p.verdict != "failed":
                out.append((what, False, f"published {p.verdict}, but committed {seconds:.3f} s after the offer "
                                         f"(budget {size.budget_s} s)"))
            elif p.verdict == "passed":
                unchecked.append(f"{what}: openings not in this bundle (decided before its last hour)")
            continue
        key = proof.keys(rnd.seed, p.node_id, p.gpu_uuid)
        try:
            root = bytes.fromhex(p.root or "")
        except ValueError:
            out.append((what, False, f"its root {p.root!r} is not hex"))
            continue
        verdict = proof.judge(key, size, root=root, rows=p.rows, cols=p.columns, openings=p.openings,
                              seconds=seconds, deadline=size.budget_s)
        full += 1
        if verdict.verdict != p.verdict:
            out.append((what, False, f"published {p.verdict}, re-derived {verdict.verdict}"
                                     + (f" ({verdict.reason})" if verdict.reason else "")))
    bad = len(out)
    summary = (f"{len(data.proofs)} published verdicts: {full} re-checked from their openings, {timing} from their "
               f"times alone, {bad} disagree")
    out.append(("proofs of GPU", bad == 0, summary))
    if unchecked:
        shown = "; ".join(unchecked[:5]) + (f"; and {len(unchecked) - 5} more" if len(unchecked) > 5 else "")
        out.append(("proofs of GPU not fully re-checkable", True, f"{len(unchecked)}: {shown}"))
    return out


# -- the whole bundle ------------------------------------------------------------------------------------------


def verify_data(data: bundle.BundleData) -> Report:
    """Verify a parsed bundle: its hashes, then every published number against its recomputation."""
    report = Report(published_sha256=hashlib.sha256(data.members[bundle.PUBLISHED]).hexdigest())
    for name, entry in sorted(data.manifest.get("members", {}).items()):
        member = data.members.get(name)
        actual = hashlib.sha256(member).hexdigest() if member is not None else None
        report.integrity.append((f"member {name}", actual == entry["sha256"],
                                 "sha256 matches the manifest" if actual == entry["sha256"]
                                 else f"sha256 {actual} but the manifest says {entry['sha256']}"))
    listed = set(data.manifest.get("members", {})) | {bundle.MANIFEST, bundle.PUBLISHED}
    for extra in sorted(set(data.members) - listed):
        report.integrity.append((f"member {extra}", False, "not listed in the manifest"))
    manifest_sha = hashlib.sha256(data.members[bundle.MANIFEST]).hexdigest()
    ok = data.published.get("manifest_sha256") == manifest_sha
    report.integrity.append(("manifest", ok, "sha256 matches published.json" if ok else
                             f"sha256 {manifest_sha} but published.json says {data.published.get('manifest_sha256')}"))
    snap = dict(data.snapshot)
    claimed = snap.pop("snapshot_sha256", None)
    actual = hashlib.sha256(canonical_json(snap)).hexdigest()
    ok = claimed == actual == data.manifest.get("snapshot_sha256")
    report.integrity.append(("snapshot", ok, "sha256 of its canonical JSON matches" if ok else
                             f"sha256 of its canonical JSON is {actual}, it claims {claimed}, "
                             f"the manifest says {data.manifest.get('snapshot_sha256')}"))
    published_snapshot = data.published.get("snapshot")
    ok = published_snapshot == data.snapshot
    report.integrity.append(("published snapshot", ok, "published.json carries the same snapshot" if ok
                             else "published.json carries a different snapshot"))

    report.integrity += proof_checks(data)
    report.numbers += _compare(published_fleet_numbers(data.snapshot), fleet_numbers(data))
    recomputed_nodes = node_numbers(data)["nodes"]
    published_nodes = data.numbers.get("nodes", {})
    for node_id in sorted(set(published_nodes) | set(recomputed_nodes), key=int):
        pub: dict[str, Any] = {}
        rec: dict[str, Any] = {}
        _flatten("", published_nodes.get(node_id, {}), pub)
        _flatten("", recomputed_nodes.get(node_id, {}), rec)
        report.numbers += _compare(pub, rec, prefix=f"node {node_id} ")
    return report


def verify(path: Path) -> Report:
    """Verify the bundle at ``path`` (fleetscope verify BUNDLE)."""
    return verify_data(bundle.read(path))
