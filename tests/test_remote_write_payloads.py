"""A remote_write request becomes, per node, exactly the batch a push of the same exporter output makes.

Each recorded payload (our exporter, dcgm-exporter, nvidia_gpu_exporter) is
sent as the series a Prometheus server would forward, for two nodes of the
operator in one request; each node's committed payload equals the push
parser's reading of the same text, and the observation is stamped with the
collector's receive time.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from collector.parse import PayloadParser
from collector.prompb import encode
from tests.collector_harness import PAYLOADS, register, sample, scrape_metrics
from tests.remotewrite import now_ms, series_of, write

FIXTURES = sorted(p.name for p in PAYLOADS.glob("*.prom"))


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_each_nodes_batch_equals_the_push_parse_of_the_same_payload(client, storage, operator_token, fixture):
    text = (PAYLOADS / fixture).read_text()
    a, _ = await register(client, operator_token, "a")
    b, _ = await register(client, operator_token, "b")
    before = datetime.now(timezone.utc)
    body = encode(series_of(text, a, instance="a:9400") + series_of(text, b, instance="b:9400"))
    response = await write(client, operator_token, body)
    assert response.status == 204, await response.text()
    expected = PayloadParser().parse(text)
    assert sorted(batch.node_id for batch in storage.committed) == [a, b]
    for batch in storage.committed:
        assert batch.ok and batch.source == "push"
        assert before <= batch.received_at <= datetime.now(timezone.utc)
        got = batch.payload
        assert (got.samples, got.identities, got.lost, got.exporter_ok, got.rejects) == (
            expected.samples, expected.identities, expected.lost, expected.exporter_ok, expected.rejects)
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_remote_writes_total", result="accepted") == 1
    assert sample(metrics, "fleetscope_collector_remote_write_samples_total", outcome="written") == \
        2 * (expected.series + 5)  # and Prometheus' 5 report series of each node's scrape


async def test_only_the_newest_scrape_of_a_node_in_a_request_is_written(client, storage, operator_token):
    text = (PAYLOADS / "dcgm_exporter_default_a100x8.prom").read_text()
    node, _ = await register(client, operator_token)
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    series = series_of(text, node, now)
    merged = [(labels, older_samples + samples) for (labels, older_samples), (_, samples)
              in zip(series_of(text, node, now - 1000), series)]
    response = await write(client, operator_token, encode(merged))
    assert response.status == 204
    [batch] = storage.committed
    assert batch.payload.samples == PayloadParser().parse(text).samples
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_remote_write_samples_total", outcome="superseded") == len(series)


async def test_a_request_for_a_node_sooner_than_a_push_may_is_taken_but_not_written(client, storage, operator_token):
    text = (PAYLOADS / "fleet_exporter_rtx4090x8.prom").read_text()
    node, _ = await register(client, operator_token, interval_s=15)
    assert (await write(client, operator_token, encode(series_of(text, node)))).status == 204
    again = await write(client, operator_token, encode(series_of(text, node)))
    assert again.status == 204  # a 429 would make Prometheus resend every node's samples
    assert len(storage.committed) == 1
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_remote_write_samples_total", outcome="too_often") > 0


async def test_a_scrape_split_across_requests_is_written_whole_once_its_end_arrives(
        client, storage, operator_token):
    text = (PAYLOADS / "dcgm_exporter_default_a100x8.prom").read_text()
    node, _ = await register(client, operator_token, interval_s=5)
    scrape = series_of(text, node)
    head, tail = scrape[:3], scrape[3:]  # remote_write cuts requests by count, not by target
    assert len({labels["UUID"] for labels, _ in head}) < 8
    assert (await write(client, operator_token, encode(head))).status == 204
    assert storage.committed == []  # held: an observation of fewer GPUs than the node has would be false
    assert (await write(client, operator_token, encode(tail))).status == 204
    [batch] = storage.committed
    assert batch.payload.samples == PayloadParser().parse(text).samples

    # Misaligned: the rest of one scrape and the start of the next in one request.
    await asyncio.sleep(2.6)  # the node's turn: max(push_min_interval_s, interval_s / 2)
    first, second = series_of(text, node, now_ms() - 1000), series_of(text, node)
    assert (await write(client, operator_token, encode(first[:100]))).status == 204
    assert (await write(client, operator_token, encode(first[100:] + second[:50]))).status == 204
    assert len(storage.committed) == 2
    await asyncio.sleep(2.6)
    assert (await write(client, operator_token, encode(second[50:]))).status == 204
    assert len(storage.committed) == 3
    assert all(b.payload.samples == batch.payload.samples for b in storage.committed)

    await asyncio.sleep(2.6)
    lost_head = series_of(text, node, now_ms() - 1000)[:3]
    assert (await write(client, operator_token, encode(lost_head))).status == 204
    assert (await write(client, operator_token, encode(series_of(text, node)))).status == 204
    assert len(storage.committed) == 4
    assert storage.committed[3].payload.samples == batch.payload.samples
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_remote_write_samples_total", outcome="partial") == len(head)
