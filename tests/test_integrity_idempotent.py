"""Re-running the checks finds nothing new: open findings are refreshed, never duplicated."""

from __future__ import annotations

from datetime import timedelta

from fleetscope.integrity import run_checks
from tests.fleetdata import T0, Fleet


def test_rerunning_the_checks_opens_nothing_new_and_refreshes_last_seen(conn):
    fleet = Fleet(conn)
    a, b = fleet.node(), fleet.node()
    fleet.gpus(a, ["GPU-shared", "GPU-a1"], since=T0 - timedelta(minutes=5))
    fleet.gpus(b, ["GPU-shared"], since=T0 - timedelta(minutes=5))
    conn.execute("UPDATE gpus SET virtualization_mode = 'vgpu' WHERE gpu_uuid = 'GPU-a1'")
    first = run_checks(conn, at=T0)
    assert first["duplicate_uuid"].opened == 1 and first["virtualized"].opened == 1
    rows = conn.execute("SELECT finding_id, kind, first_seen FROM integrity_findings ORDER BY 1").fetchall()
    for minutes in (1, 2, 3):
        again = run_checks(conn, at=T0 + timedelta(minutes=minutes))
        assert all(r.opened == 0 and r.resolved == 0 for r in again.values())
        assert again["duplicate_uuid"].refreshed == 1
    assert conn.execute("SELECT finding_id, kind, first_seen FROM integrity_findings ORDER BY 1").fetchall() == rows
    assert {r[0] for r in conn.execute("SELECT last_seen FROM integrity_findings")} == {T0 + timedelta(minutes=3)}


def test_the_checks_mark_the_gpus_they_examined_once(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.gpus(node, ["GPU-1"], since=T0 - timedelta(minutes=5))
    fleet.gpus(node, ["GPU-apple"], since=T0 - timedelta(minutes=4), model="Apple M2 Pro")
    run_checks(conn, at=T0)
    run_checks(conn, at=T0 + timedelta(minutes=1))
    checked = dict(conn.execute("SELECT gpu_uuid, checked_at FROM gpus").fetchall())
    # A model the reference table does not know cannot be checked: it stays unverified.
    assert checked == {"GPU-1": T0, "GPU-apple": None}
