"""``fleetscope verify`` re-derives every published proof of GPU from the bundle alone, and says what it could not."""

from __future__ import annotations

import base64
import csv
import io
import json

import numpy as np

from fleetscope import bundle, cli, proof
from fleetscope.chain import publish
from fleetscope.snapshot import fleet_snapshot
from fleetscope.verify import proof_checks, verify
from tests.publishdata import AS_OF, week_fleet
from tests.test_verify_tampered import rewrite


def _proofs(path):
    return bundle.read(path).proofs


def test_the_bundle_carries_each_proof_and_its_openings_and_verify_rechecks_them(conn, open_tmp, capsys):
    week_fleet(conn)
    published = publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")
    proofs = _proofs(published.bundle_path)
    by_gpu = {p.gpu_uuid: p for p in proofs}
    assert {g: p.verdict for g, p in by_gpu.items()} == {
        "GPU-s1": "passed", "GPU-s2": "passed", "GPU-shared": "passed", "GPU-f1": "passed", "GPU-c1": "failed"}
    # The last hour's proofs carry their openings; flaky's, 5 hours old, only its verdict.
    assert by_gpu["GPU-s1"].openings and by_gpu["GPU-f1"].openings is None
    assert cli.main(["verify", str(published.bundle_path)]) == 0
    out = capsys.readouterr().out
    assert "ok  proofs of GPU: 5 published verdicts: 4 re-checked from their openings, 1 from their times alone, " \
           "0 disagree" in out
    # The verified count in the snapshot is the passed proofs' (the cheat's failure flags it).
    snap = fleet_snapshot(conn, as_of=AS_OF).body
    assert snap["gpus"]["verified"] == 4 and snap["integrity"]["by_kind"]["proof_failed"] == 1


def _edit_proofs(change):
    def edit(files):
        rows = list(csv.DictReader(io.StringIO(files["proofs.csv"].decode())))
        change(rows)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=bundle.TABLES["proofs.csv"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        files["proofs.csv"] = out.getvalue().encode()
    return edit


def test_a_failed_proof_published_as_passed_is_caught(conn, open_tmp):
    week_fleet(conn)
    published = publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")

    def pass_the_cheat(rows):
        for r in rows:
            if r["gpu_uuid"] == "GPU-c1":
                r["verdict"], r["reason"] = "passed", ""
    path = rewrite(published.bundle_path, open_tmp, _edit_proofs(pass_the_cheat), reseal=True)
    report = verify(path)
    bad = [(what, detail) for what, ok, detail in report.integrity if not ok]
    assert any("GPU-c1" in what and "published passed, re-derived failed (wrong result" in detail
               for what, detail in bad), bad
    assert not report.ok


def _forge_chunk(rows, gpu_uuid, change):
    """Apply ``change`` to the float32 values of the first published chunk of ``gpu_uuid``'s proof."""
    for r in rows:
        if r["gpu_uuid"] == gpu_uuid:
            openings = json.loads(r["openings"])
            values = np.frombuffer(base64.b64decode(openings[0]["chunk"]), dtype="<f4").copy()
            change(values, r, openings[0]["leaf"])
            openings[0]["chunk"] = base64.b64encode(values.tobytes()).decode()
            r["openings"] = json.dumps(openings)


def test_an_opened_entry_changed_after_the_fact_is_caught(conn, open_tmp):
    week_fleet(conn)
    published = publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")

    def forge_checked_entry(values, row, leaf):
        n, rows, cols = int(row["n"]), json.loads(row["rows"]), json.loads(row["columns"])
        i, j = next((i, j) for i in rows for j in cols if proof.leaf_of(i, j, n) == leaf)
        values[(i * n + j) % proof.CHUNK_ENTRIES] += 5.0
    path = rewrite(published.bundle_path, open_tmp,
                   _edit_proofs(lambda rows: _forge_chunk(rows, "GPU-s1", forge_checked_entry)), reseal=True)
    bad = [detail for what, ok, detail in verify(path).integrity if not ok and "GPU-s1" in what]
    assert bad and "re-derived failed (leaf" in bad[0] and "does not match the commitment" in bad[0]


def test_a_proof_sized_smaller_than_the_protocol_says_is_caught(conn, open_tmp):
    week_fleet(conn)
    published = publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")

    def shrink(rows):
        for r in rows:
            if r["gpu_uuid"] == "GPU-s2":
                r["k"] = "64"
    path = rewrite(published.bundle_path, open_tmp, _edit_proofs(shrink), reseal=True)
    bad = [detail for what, ok, detail in verify(path).integrity if not ok and "GPU-s2" in what]
    assert bad and bad[0].startswith("sized n=") and "k=64" in bad[0]


def test_a_chunk_changed_after_the_fact_fails_on_the_commitment(conn, open_tmp):
    # Even where no checked entry is: the auditor hashes every published chunk into its leaf.
    week_fleet(conn)
    published = publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")

    def forge_unchecked_entry(values, row, leaf):
        n, rows, cols = int(row["n"]), json.loads(row["rows"]), json.loads(row["columns"])
        checked = {(i * n + j) % proof.CHUNK_ENTRIES for i in rows for j in cols if proof.leaf_of(i, j, n) == leaf}
        values[next(e for e in range(proof.CHUNK_ENTRIES) if e not in checked)] = 0.5
    path = rewrite(published.bundle_path, open_tmp,
                   _edit_proofs(lambda rows: _forge_chunk(rows, "GPU-s2", forge_unchecked_entry)), reseal=True)
    lines = {what: (ok, detail) for what, ok, detail in proof_checks(bundle.read(path))}
    [(ok, detail)] = [v for what, v in lines.items() if "GPU-s2" in what]
    assert not ok and detail.startswith("published passed, re-derived failed (leaf ")
    assert "does not match the commitment" in detail
    assert not lines["proofs of GPU"][0]
    # Every opening is published whole: only the pass decided before the bundle's last hour is not re-checked.
    ok, detail = lines["proofs of GPU not fully re-checkable"]
    assert ok and detail.startswith("1: ") and "GPU-f1: openings not in this bundle" in detail


def test_a_host_reporting_other_memory_later_does_not_unsettle_its_published_proofs(conn, open_tmp):
    """Proofs are re-sized from the memory claimed when their round opened, recorded with them."""
    week_fleet(conn)
    conn.execute("UPDATE gpus SET memory_total_bytes = 40 * 2::bigint ^ 30 WHERE gpu_uuid = 'GPU-s1'")
    published = publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")
    report = verify(published.bundle_path)
    assert report.ok, [(what, detail) for what, ok, detail in report.integrity if not ok]
