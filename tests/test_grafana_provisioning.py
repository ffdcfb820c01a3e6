"""Every Grafana panel's SQL, with Grafana's macros expanded, runs on a populated fleetscope database and returns rows.

The macros are expanded as Grafana's PostgreSQL datasource does with the
TimescaleDB option on ($__timeGroup becomes time_bucket(), which the plain
mode provides as a shim), template variables are replaced by a value their
own query returns, and the provisioning files and dashboards parse. The fleet
overview's node counts equal the fleet snapshot's at the end of the range.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import yaml

from fleetscope.snapshot import fleet_snapshot
from tests.fleetdata import T0, Fleet, at

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROVISIONING = sorted((GRAFANA / "provisioning").rglob("*.yaml"))
TIME_FROM, TIME_TO = T0 - timedelta(hours=6), T0
INTERVAL = "1m"  # what Grafana would put in $__interval for a 6 h range on a wide panel
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _literal(t: datetime) -> str:
    return "'" + t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _seconds(text: str) -> float:
    text = text.strip().strip("'\"")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text)
    assert match, f"an interval Grafana would not parse: {text!r}"
    return float(match[1]) * UNITS[match[2]]


def expand(sql: str, variables: dict[str, str]) -> str:
    """``sql`` as Grafana's PostgreSQL datasource (TimescaleDB option on) would send it."""
    sql = sql.replace("$__interval", INTERVAL)
    for name, value in variables.items():
        sql = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, sql)

    def group(match: re.Match, alias: bool) -> str:
        column, interval = (part.strip() for part in match[1].split(",", 1))
        text = f"time_bucket('{_seconds(interval):.3f}s',{column})"
        return text + (' AS "time"' if alias else "")

    sql = re.sub(r"\$__timeGroupAlias\(([^()]*)\)", lambda m: group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(([^()]*)\)", lambda m: group(m, False), sql)
    sql = re.sub(r"\$__timeFilter\(([^()]*)\)",
                 lambda m: f"{m[1].strip()} BETWEEN {_literal(TIME_FROM)} AND {_literal(TIME_TO)}", sql)
    sql = sql.replace("$__timeFrom()", _literal(TIME_FROM)).replace("$__timeTo()", _literal(TIME_TO))
    assert "$" not in sql, f"an unexpanded macro or variable: {sql}"
    return sql


def _populate(conn: psycopg.Connection) -> dict[str, int]:
    fleet = Fleet(conn)
    up, flaky, gone = fleet.node(name="up"), fleet.node(name="flaky"), fleet.node(name="gone")
    fleet.observing(T0 - timedelta(days=1), T0)
    fleet.gpus(up, ["GPU-a", "GPU-b"], model="NVIDIA GeForce RTX 4090")
    # Two hours, every 15 s: "up" always ok, "flaky" failing once a minute,
    # "gone" silent for the last hour; GPU samples once a minute.
    conn.execute("""
        INSERT INTO observations (time, node_id, ok, source, slot, latency_ms, error)
        SELECT t, node_id, ok, 'scrape', floor(extract(epoch FROM t) / 15)::bigint, 3.0,
               CASE WHEN ok THEN NULL ELSE 'connection refused' END
          FROM generate_series(-7200, -15, 15) AS s,
               LATERAL (VALUES (%(up)s, %(t0)s + make_interval(secs => s + 1), true),
                               (%(flaky)s, %(t0)s + make_interval(secs => s + 2), s %% 60 <> 0),
                               (%(gone)s, %(t0)s + make_interval(secs => s + 3), true)) AS v(node_id, t, ok)
         WHERE v.node_id <> %(gone)s OR s < -3600
    """, {"up": up, "flaky": flaky, "gone": gone, "t0": T0})
    conn.execute("""
        INSERT INTO gpu_samples (time, node_id, gpu_uuid, gpu_index, gpu_util, fb_used_mib, power_w, temp_c)
        SELECT %(t0)s + make_interval(secs => s + 1), %(up)s, g.uuid, g.idx, 87, 20000, 350, 66
          FROM generate_series(-7200, -60, 60) AS s, (VALUES ('GPU-a', 0), ('GPU-b', 1)) AS g(uuid, idx)
    """, {"up": up, "t0": T0})
    fleet.observe(up, at(-1800 + 7), ok=False)  # one failed scrape in the middle of a good run
    fleet.job("job-1", up, gpu_count=1, price="0.40", started_at=T0 - timedelta(hours=3))
    conn.execute("INSERT INTO ingest_batches (batch_id, written_at, rows) VALUES ('b1', %s, 500), ('b2', %s, 700)",
                 (T0 - timedelta(minutes=30), T0 - timedelta(minutes=5)))
    channel = conn.execute("INSERT INTO alert_channels (operator_id, kind, target) VALUES (%s, 'webhook',"
                           " 'https://hooks.example/x') RETURNING channel_id", (fleet.operator_id,)).fetchone()[0]
    conn.execute("INSERT INTO alert_deliveries (channel_id, node_id, event, payload, attempted_at, ok, kind)"
                 " VALUES (%s, %s, 'node_down', '{}', %s, true, 'webhook')", (channel, up, T0 - timedelta(hours=1)))
    # What the collector's alert loop keeps (collector/alerts.py).
    conn.execute("UPDATE nodes SET last_ok_at = %s WHERE node_id = %s", (at(-3597), gone))
    return {"node": up}


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # rows
    return panels


def _queries() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for variable in dashboard["templating"]["list"]:
            found.append((path.stem, f"variable {variable['name']}", variable["query"]))
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                found.append((path.stem, panel["title"], target["rawSql"]))
    for path in sorted((GRAFANA / "provisioning" / "alerting").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for query in rule["data"]:
                    if query["datasourceUid"] != "__expr__":
                        found.append((path.stem, rule["title"], query["model"]["rawSql"]))
    return found


def test_every_dashboard_and_provisioning_file_parses_and_points_at_the_provisioned_datasource():
    assert {p.stem for p in DASHBOARDS} == {"fleet-overview", "node-detail", "gpu-telemetry", "collector-health"}
    assert PROVISIONING
    configs = {p.parent.name: yaml.safe_load(p.read_text()) for p in PROVISIONING}
    [datasource] = configs["datasources"]["datasources"]
    assert datasource["jsonData"]["timescaledb"] is True
    assert "password" not in datasource and datasource["secureJsonData"]["password"].startswith("${")
    assert configs["dashboards"]["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        for panel in _panels(dashboard):
            assert panel["datasource"]["uid"] == datasource["uid"], (path.name, panel["title"])
    assert len(uids) == len(DASHBOARDS)
    rules = [r for g in configs["alerting"]["groups"] for r in g["rules"]]
    assert {r["uid"] for r in rules} == {"fleetscope-node-offline", "fleetscope-not-observing"}
    assert all(q["datasourceUid"] in (datasource["uid"], "__expr__") for r in rules for q in r["data"])


@pytest.mark.parametrize("source, title, sql", _queries(), ids=lambda v: v if len(v) < 60 else None)
def test_every_panel_query_runs_on_a_populated_database_and_returns_rows(conn, source, title, sql):
    variables = {k: str(v) for k, v in _populate(conn).items()}
    rows = conn.execute(expand(sql, variables)).fetchall()
    assert rows, f"{source} / {title} returned no rows"


def test_the_fleet_overview_counts_nodes_as_the_fleet_snapshot_does(conn):
    _populate(conn)
    dashboard = json.loads((GRAFANA / "dashboards" / "fleet-overview.json").read_text())
    [panel] = [p for p in dashboard["panels"] if p["title"].startswith("Nodes registered and online")]
    cur = conn.execute(expand(panel["targets"][0]["rawSql"], {}))
    counts = dict(zip([d.name for d in cur.description], cur.fetchone()))
    snapshot = fleet_snapshot(conn, as_of=TIME_TO).body
    assert counts == {"registered": snapshot["nodes"]["registered"], "online": snapshot["nodes"]["online"]}
    assert counts == {"registered": 3, "online": 2}
