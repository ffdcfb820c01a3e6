"""A bundle tampered with in one number fails verification on that number and names it."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from fleetscope import bundle, cli
from fleetscope.chain import _sealed, publish
from fleetscope.snapshot import canonical_json
from tests.publishdata import AS_OF, week_fleet


@pytest.fixture
def published(conn, open_tmp):
    week_fleet(conn)
    return publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")


def rewrite(path, tmp, change, *, reseal: bool):
    """A copy of the bundle with ``change(files)`` applied; with ``reseal``, every hash made to fit again (a careful forger)."""
    files = {n: zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist()}
    change(files)
    if reseal:
        snapshot = json.loads(files[bundle.SNAPSHOT])
        snapshot.pop("snapshot_sha256")
        sha = hashlib.sha256(canonical_json(snapshot)).hexdigest()
        snapshot["snapshot_sha256"] = sha
        files[bundle.SNAPSHOT] = canonical_json(snapshot)
        files = _sealed(files, as_of=AS_OF, snapshot_sha256=sha, prev_sha256=None, snapshot=snapshot)
    out = tmp / "tampered.zip"
    bundle.write(out, files, at=AS_OF)
    return out


def snapshot_number(group, key, delta):
    def change(files):
        snap = json.loads(files[bundle.SNAPSHOT])
        snap[group][key] += delta
        files[bundle.SNAPSHOT] = canonical_json(snap)
    return change


def test_a_resealed_bundle_with_one_count_changed_fails_on_that_count(published, open_tmp, capsys):
    path = rewrite(published.bundle_path, open_tmp, snapshot_number("gpus", "online", 1), reseal=True)
    assert cli.main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    mismatches = [line for line in out.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatches) == 1 and mismatches[0].startswith("MISMATCH  gpus.online: published ")
    assert "FAILED: 1 numbers do not match (gpus.online)" in out


def test_a_resealed_bundle_with_more_revenue_fails_on_the_revenue(published, open_tmp, capsys):
    path = rewrite(published.bundle_path, open_tmp, snapshot_number("revenue_usd", "total", 1000), reseal=True)
    assert cli.main(["verify", str(path)]) == 1
    mismatches = [line for line in capsys.readouterr().out.splitlines() if line.startswith("MISMATCH")]
    assert [m.split(":")[0] for m in mismatches] == ["MISMATCH  revenue_usd.total"]


def test_a_reputation_raised_in_the_bundle_fails_on_that_nodes_score(published, open_tmp, capsys):
    def change(files):
        numbers = json.loads(files[bundle.NUMBERS])
        first = sorted(numbers["nodes"], key=int)[0]
        numbers["nodes"][first]["score"] = 99.99
        files[bundle.NUMBERS] = canonical_json(numbers)
        change.node = first

    path = rewrite(published.bundle_path, open_tmp, change, reseal=True)
    assert cli.main(["verify", str(path)]) == 1
    mismatches = [line for line in capsys.readouterr().out.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatches) == 1 and mismatches[0].startswith(f"MISMATCH  node {change.node} score: published 99.99")


def test_a_changed_job_price_changes_the_recomputed_revenue_and_the_member_hash(published, open_tmp, capsys):
    def change(files):
        files["jobs.csv"] = files["jobs.csv"].replace(b",3.990000,", b",39.900000,")

    path = rewrite(published.bundle_path, open_tmp, change, reseal=False)
    assert cli.main(["verify", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "MISMATCH  member jobs.csv: sha256" in "\n".join(lines)
    names = {line.split(":")[0].removeprefix("MISMATCH  ") for line in lines if line.startswith("MISMATCH")}
    assert names == {"member jobs.csv", "revenue_usd.last_24h", "revenue_usd.total"}


def test_a_file_that_is_not_a_bundle_is_refused_with_a_message(open_tmp, capsys):
    path = open_tmp / "nothing.zip"
    path.write_bytes(b"not a zip")
    assert cli.main(["verify", str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err
