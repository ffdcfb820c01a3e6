"""Paging, sorting and filtering hold at 100,000 GPUs (12,500 nodes x 8)."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg
import pytest

from dashboard.app import create_app
from tests.dashboard_harness import get, serve

NODES, GPUS = 12_500, 8
LOAD_SQL = """
INSERT INTO operators (operator_id, name, token_hash) VALUES (1, 'big', '\\x00');
INSERT INTO nodes (node_id, operator_id, name, interval_s, grace_s, token_hash, registered_at)
SELECT n, 1, 'node-' || lpad(n::text, 5, '0'), 15, 3600, decode(md5(n::text), 'hex'), %(at)s - interval '1 day'
  FROM generate_series(1, %(nodes)s) n;
INSERT INTO gpus (node_id, gpu_uuid, gpu_index, model, memory_total_bytes, first_seen, last_seen)
SELECT n, 'GPU-' || md5(n || '-' || g), g, CASE WHEN n %% 2 = 0 THEN 'NVIDIA L40S' ELSE 'NVIDIA A100-SXM4-80GB' END,
       85899345920, %(at)s - interval '1 day', %(at)s
  FROM generate_series(1, %(nodes)s) n, generate_series(0, %(gpus)s - 1) g;
INSERT INTO proof_rounds (round_id, opened_at, seed, protocol_version, scale, share)
VALUES (1, %(at)s - interval '1 hour', repeat('00', 32), 1, 1, 1);
INSERT INTO proof_challenges (round_id, node_id, gpu_uuid, model, n, k, reference_tflops, budget_s, offered_at,
                              verdict, decided_at)
SELECT 1, node_id, gpu_uuid, model, 64, 64, 1, 1, %(at)s - interval '1 hour', 'passed', %(at)s - interval '1 hour'
  FROM gpus;
INSERT INTO node_gpu_sets (node_id, since, healthy)
SELECT node_id, %(at)s - interval '1 day', array_agg(gpu_uuid ORDER BY gpu_index) FROM gpus GROUP BY node_id;
INSERT INTO observations (time, node_id, ok, source, slot)
SELECT %(at)s - interval '10 minutes', n, true, 'push', floor(extract(epoch FROM %(at)s - interval '10 minutes') / 15)
  FROM generate_series(1, %(nodes)s) n WHERE n %% 10 <> 0;
INSERT INTO jobs (job_id, node_id, gpu_count, price_per_gpu_hour, started_at, status)
SELECT 'run-' || n, n, 4, 1.0, %(at)s - interval '30 minutes', 'running'
  FROM generate_series(1, %(nodes)s) n WHERE n %% 4 = 0
"""


@pytest.fixture
def big_explorer_url(dsn, explorer):
    with psycopg.connect(dsn, autocommit=True) as conn:
        params = {"at": datetime.now(timezone.utc), "nodes": NODES, "gpus": GPUS}
        for statement in LOAD_SQL.split(";\n"):
            conn.execute(statement, params)
        conn.execute("ANALYZE")
    with serve(create_app(explorer).server) as url:
        yield url


def test_a_hundred_thousand_gpus_page_sort_and_filter(big_explorer_url):
    url = big_explorer_url
    _, fleet, _ = get(f"{url}/api/v1/fleet")
    assert fleet["gpus"]["registered"] == NODES * GPUS == 100_000
    status, last, _ = get(f"{url}/api/v1/gpus?limit=50&offset=99990")
    assert status == 200 and last["total"] == 100_000 and len(last["items"]) == 10
    _, first, _ = get(f"{url}/api/v1/gpus?limit=1000&sort=gpu_uuid&order=desc")
    uuids = [g["gpu_uuid"] for g in first["items"]]
    assert len(uuids) == 1000 and uuids == sorted(uuids, reverse=True)
    _, hired, _ = get(f"{url}/api/v1/gpus?state=hired&limit=1")
    # Every fourth node runs a 4-GPU job; a tenth of the nodes are offline
    # (n % 20 = 0 are both: their jobs are hired_offline).
    assert hired["total"] == fleet["gpus"]["hired"] == 4 * (NODES // 4 - NODES // 20)
    _, one_node, _ = get(f"{url}/api/v1/gpus?q=node-01234&limit=100")
    assert one_node["total"] == GPUS and {g["node_id"] for g in one_node["items"]} == {1234}
    _, nodes, _ = get(f"{url}/api/v1/nodes?status=new,down&limit=1&sort=node_id&order=desc")
    assert nodes["total"] == fleet["nodes"]["offline"] == NODES // 10
    assert nodes["items"][0]["node_id"] == NODES
