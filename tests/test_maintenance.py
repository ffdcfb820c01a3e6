"""The maintenance loop materialises closed rollup hours and prunes old write records and stored snapshots."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from collector.maintenance import run_once
from tests.fleetdata import T0, Fleet


def test_one_round_materialises_closed_hours_and_prunes_old_write_records(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        fleet = Fleet(conn)
        node = fleet.node()
        for i in range(0, 7200, 15):
            fleet.observe(node, T0 - timedelta(hours=2) + timedelta(seconds=i))
        conn.execute("INSERT INTO ingest_batches (batch_id, rows, written_at) VALUES ('old', 1, %s), ('new', 1, %s)",
                     (T0 - timedelta(days=8), T0 - timedelta(hours=1)))
        conn.execute("INSERT INTO fleet_snapshots (as_of, versions, sha256, body) VALUES"
                     " (%s, 'v', 'old', '{}'), (%s, 'v', 'new', '{}')",
                     (T0 - timedelta(days=3), T0 - timedelta(hours=1)))
    done = run_once(dsn, now=T0 + timedelta(minutes=10))
    assert done == {"rollup_watermark": T0, "rollup_rows": 2, "ingest_records_pruned": 1, "snapshots_pruned": 1}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT bucket, ok_slots FROM node_hourly_mat ORDER BY bucket").fetchall() == [
            (T0 - timedelta(hours=2), 240), (T0 - timedelta(hours=1), 240)]
        assert [r[0] for r in conn.execute("SELECT batch_id FROM ingest_batches")] == ["new"]
    assert run_once(dsn, now=T0 + timedelta(minutes=20))["rollup_rows"] == 0  # nothing new to close
