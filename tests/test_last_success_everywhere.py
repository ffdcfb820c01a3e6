"""The operator view and the alert loop's first round find a node's exact last success, as the explorer does.

All three use one definition (``fleetscope.states.LAST_OK_SQL``): a node dead
for two days behind hundreds of failures, a node last seen in the hour being
evaluated (or, at the hour's first instant, the hour before), and a node
never seen, which has none.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from collector.alerts import Evaluator
from fleetscope.explorer import NODE_COLUMNS, fleet_tables
from fleetscope.operators import operator_view
from tests.fleetdata import T0, Fleet, last_seen_nodes

LAST_OK = NODE_COLUMNS.index("last_ok")


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if t is not None else None


@pytest.mark.parametrize("as_of", [T0 + timedelta(minutes=30), T0], ids=["mid-hour", "hour-start"])
async def test_operator_view_and_first_alert_round_give_the_exact_last_success(conn, any_mode_dsn, as_of):
    fleet = Fleet(conn)
    seen = last_seen_nodes(fleet, at=as_of)
    expected = seen.last_ok

    view = operator_view(conn, fleet.operator_id, at=as_of)
    nodes = {n["node_id"]: n for n in view["nodes"]}
    assert {node_id: nodes[node_id]["last_ok_at"] for node_id in expected} == \
        {node_id: _iso(t) for node_id, t in expected.items()}
    assert [nodes[n]["state"] for n in (seen.dead, seen.recent, seen.never)] == ["down", "down", "new"]

    async with await psycopg.AsyncConnection.connect(any_mode_dsn, autocommit=True) as aconn:
        result = await Evaluator(flap_window=timedelta(hours=1)).run_round(aconn, now=as_of)
    assert result.scanned_nodes == 2 and result.messages == []  # first known states are not announced
    rows = dict(conn.execute("SELECT node_id, last_ok_at FROM nodes WHERE node_id = ANY(%s)",
                             (list(expected),)).fetchall())
    assert rows == expected

    tables = {row[0]: row for row in fleet_tables(conn, at=as_of).nodes}
    assert {node_id: tables[node_id][LAST_OK] for node_id in expected} == expected
