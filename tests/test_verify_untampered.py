"""An untampered bundle verifies, number by number, and its published numbers are the database's."""

from __future__ import annotations

import json
import zipfile

from fleetscope import cli
from fleetscope.chain import publish
from fleetscope.reputation import node_reputation
from fleetscope.snapshot import fleet_snapshot
from fleetscope.verify import verify
from tests.publishdata import AS_OF, week_fleet


def test_an_untampered_bundle_verifies_and_every_number_matches(conn, open_tmp, capsys):
    nodes = week_fleet(conn)
    published = publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")
    assert published is not None and published.prev_sha256 is None
    assert cli.main(["verify", str(published.bundle_path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("verified: every number matches")
    for name in ("gpus.online", "gpus.flagged", "revenue_usd.total", "gpu_hours.last_24h", "nodes.offline"):
        assert f"ok  {name} = " in out
    report = verify(published.bundle_path)
    assert report.ok and len(report.numbers) > 100
    # Something to verify: offline, hired-offline, flagged and unverified GPUs, and money.
    snap = json.loads(zipfile.ZipFile(published.bundle_path).read("snapshot.json"))
    assert snap == fleet_snapshot(conn, as_of=AS_OF).as_dict()
    assert snap["gpus"]["hired_offline"] == 1 and snap["gpus"]["flagged"] >= 1 and snap["gpus"]["unverified"] >= 1
    assert snap["revenue_usd"]["total"] > 0


def test_the_published_uptimes_and_reputations_are_what_the_database_says(conn, open_tmp):
    nodes = week_fleet(conn)
    published = publish(conn, as_of=AS_OF, bundle_dir=open_tmp / "bundles")
    numbers = json.loads(zipfile.ZipFile(published.bundle_path).read("numbers.json"))["nodes"]
    assert sorted(map(int, numbers)) == nodes
    for node_id in nodes:
        assert numbers[str(node_id)] == node_reputation(conn, node_id, at=AS_OF).as_dict()
    scores = [numbers[str(n)]["score"] for n in nodes]
    assert scores[3] == 0.0 and numbers[str(nodes[3])]["inputs"]["V"] == 0.0  # the virtualised node
    assert len(set(scores)) == len(scores)  # five different histories, five different scores
