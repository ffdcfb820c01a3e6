"""/api/v1/nodes and /api/v1/gpus page, sort and filter on the server; bad parameters get a 400 and a reason."""

from __future__ import annotations

import csv
import io

import pytest

from tests.dashboard_harness import get


def test_nodes_are_paged_and_sorted(explorer_url):
    status, page, _ = get(f"{explorer_url}/api/v1/nodes?limit=2&offset=1&sort=name&order=desc")
    assert status == 200
    assert page["total"] == 6 and (page["limit"], page["offset"]) == (2, 1)
    assert [n["name"] for n in page["items"]] == ["echo", "delta"]
    node = page["items"][0]
    assert set(node) >= {"node_id", "name", "operator", "status", "online", "last_ok", "gpus", "gpus_online",
                         "gpus_hired", "models", "flagged"}


def test_nodes_filter_by_state_and_search(explorer_url):
    _, down, _ = get(f"{explorer_url}/api/v1/nodes?status=down")
    assert [n["name"] for n in down["items"]] == ["charlie"]
    _, found, _ = get(f"{explorer_url}/api/v1/nodes?q=L40S")
    assert sorted(n["name"] for n in found["items"]) == ["echo", "foxtrot"]


def test_gpus_filter_by_state_and_verification(explorer_url):
    _, hired, _ = get(f"{explorer_url}/api/v1/gpus?state=hired&sort=gpu_uuid")
    assert [g["gpu_uuid"] for g in hired["items"]] == ["GPU-a0", "GPU-a1", "GPU-a2"]
    _, flagged, _ = get(f"{explorer_url}/api/v1/gpus?verification=flagged")
    assert [g["gpu_uuid"] for g in flagged["items"]] == ["GPU-d0"]
    _, shared, _ = get(f"{explorer_url}/api/v1/gpus?q=gpu-shared")
    assert {g["node_name"] for g in shared["items"]} == {"echo", "foxtrot"}
    assert all(g["shared"] for g in shared["items"])


def test_a_table_downloads_as_csv_with_every_matching_row(explorer_url):
    status, text, headers = get(f"{explorer_url}/api/v1/gpus?format=csv&limit=1")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 13  # every claim, not one page
    assert {r["gpu_uuid"] for r in rows} >= {"GPU-a0", "GPU-shared"}


@pytest.mark.parametrize("query, reason", [
    ("limit=0", "limit must be between 1 and 1000"),
    ("limit=abc", "limit must be an integer"),
    ("offset=-1", "offset must be between"),
    ("sort=password", "sort must be one of"),
    ("order=sideways", "order must be asc or desc"),
    ("status=asleep", "status must be among"),
    ("q=" + "x" * 201, "q is longer than 200"),
    ("color=red", "unknown parameter 'color'"),
    ("format=xml", "format must be json or csv"),
    ("sort=name%3BDROP%20TABLE%20nodes", "sort must be one of"),
])
def test_malformed_parameters_get_a_400_with_the_reason(explorer_url, query, reason):
    status, body, _ = get(f"{explorer_url}/api/v1/nodes?{query}")
    assert status == 400
    assert body["error"] == "bad_parameter" and reason in body["reason"]


@pytest.mark.parametrize("path", ["/api/v1/nodes/%C2%B2", "/api/v1/nodes/%C2%B2/history", "/api/v1/snapshots/%C2%B2/bundle"])
def test_non_ascii_digits_are_a_404_not_an_error(explorer_url, path):
    assert get(f"{explorer_url}{path}")[0] == 404
    assert get(f"{explorer_url}/nodes/%C2%B2")[0] == 404
    assert get(f"{explorer_url}/api/v1/integrity?limit=%C2%B2")[0] == 400


def test_a_node_name_a_spreadsheet_would_run_is_written_as_text(dsn, explorer_url):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE nodes SET name = '=HYPERLINK(\"http://x\")' WHERE name = 'alpha'")
    _, text, _ = get(f"{explorer_url}/api/v1/nodes?format=csv")
    assert "'=HYPERLINK" in text and "\n=HYPERLINK" not in text
