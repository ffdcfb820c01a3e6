"""Published snapshots form a hash chain, each with a bundle the dashboard can list and serve."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from fleetscope.chain import bundle_file, chain_problems, due_as_of, list_published, publish
from fleetscope.verify import verify
from tests.publishdata import AS_OF, week_fleet


def test_each_published_snapshot_carries_the_previous_hash_and_verifies(conn, open_tmp):
    week_fleet(conn)
    first = publish(conn, as_of=AS_OF - timedelta(hours=1), bundle_dir=open_tmp)
    second = publish(conn, as_of=AS_OF, bundle_dir=open_tmp)
    assert first.prev_sha256 is None and second.prev_sha256 == first.sha256
    # Publishing a period again, or an earlier one, does nothing: the chain only grows forward.
    assert publish(conn, as_of=AS_OF, bundle_dir=open_tmp) is None
    assert publish(conn, as_of=AS_OF - timedelta(hours=3), bundle_dir=open_tmp) is None
    assert chain_problems(conn) == []
    for p in (first, second):
        assert verify(p.bundle_path).ok
        body = conn.execute("SELECT body FROM published_snapshots WHERE snapshot_id = %s",
                            (p.snapshot_id,)).fetchone()[0]
        assert hashlib.sha256(body.encode()).hexdigest() == p.sha256
        assert json.loads(body)["snapshot"]["snapshot_sha256"] == p.snapshot_sha256

    listed = list_published(conn, limit=10)
    assert [r["sha256"] for r in listed] == [second.sha256, first.sha256]
    assert listed[0]["as_of"] == "2026-11-24T12:00:00Z" and listed[0]["bundle"] == second.bundle_path.name
    assert listed[0]["bundle_bytes"] == second.bundle_path.stat().st_size
    assert list_published(conn, limit=1, offset=1)[0]["snapshot_id"] == first.snapshot_id
    assert bundle_file(conn, second.snapshot_id) == second.bundle_path
    assert bundle_file(conn, 10_000) is None


def test_a_record_changed_in_the_database_breaks_the_chain(conn, open_tmp):
    week_fleet(conn)
    publish(conn, as_of=AS_OF - timedelta(hours=1), bundle_dir=open_tmp)
    second = publish(conn, as_of=AS_OF, bundle_dir=open_tmp)
    conn.execute("UPDATE published_snapshots SET body = replace(body, '\"online\":', '\"online\": ')"
                 " WHERE snapshot_id = %s", (second.snapshot_id,))
    assert chain_problems(conn) == [f"snapshot {second.snapshot_id}: its record does not hash to its sha256"]


def test_the_due_period_is_the_latest_hour_that_has_settled():
    assert due_as_of(AS_OF + timedelta(minutes=5)) == AS_OF
    assert due_as_of(AS_OF + timedelta(seconds=10)) == AS_OF - timedelta(hours=1)
    assert due_as_of(AS_OF + timedelta(minutes=7), period=timedelta(minutes=5)) == AS_OF + timedelta(minutes=5)
