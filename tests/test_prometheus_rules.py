"""The Prometheus rules file parses, passes `promtool check rules`, and names only metrics a real collector exposes.

The collector runs with everything production runs (writer, scraper,
maintenance, alerts) on a real database, and its /metrics is scraped over HTTP.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from collector.app import default_components, make_app
from tests.collector_harness import collector_settings

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "fleetscope-rules.yml"
ALERTMANAGER = ROOT / "prometheus" / "alertmanager.example.yml"
# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = {"up"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


async def _exposed_series(dsn: str, tmp_path: Path, aiohttp_client) -> set[str]:
    settings = collector_settings(dsn, tmp_path, alert_eval_s=0.1)
    client = await aiohttp_client(make_app(settings, components=default_components(settings)))
    try:
        for _ in range(50):  # until the alert loop has finished a round
            text = await (await client.get("/metrics")).text()
            if "fleetscope_alert_last_round_timestamp_seconds " in text:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    series = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M):
        base = name.removesuffix("_total") if kind == "counter" else name
        series.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return series


async def test_every_metric_in_the_rules_is_exposed_by_a_real_collector(dsn, tmp_path, aiohttp_client):
    exposed = await _exposed_series(dsn, tmp_path, aiohttp_client)
    assert "fleetscope_writer_database_up" in exposed and "fleetscope_collector_scrapes_total" in exposed
    rules = _rules()
    assert len(rules) >= 10
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])  # not label values
        names = set(re.findall(r"\b(fleetscope_[a-z0-9_]+|up)\b(?=\s*[{\[)*<>=!/ \n]|$)", expr))
        assert names, rule["alert"]
        missing = names - exposed - PROMETHEUS_SERIES
        assert not missing, f"{rule['alert']}: the collector exposes no {sorted(missing)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alertmanager_example_routes_only_to_receivers_it_defines():
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(route["receiver"] in receivers for route in routes)
    severities = {r["labels"]["severity"] for r in _rules()}
    routed = {m.split("=")[1].strip('"') for route in routes for m in route.get("matchers", [])}
    assert routed <= severities


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool is not installed (Debian: prometheus-alertmanager)")
def test_amtool_accepts_the_alertmanager_example():
    result = subprocess.run(["amtool", "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
