"""Liveness from remote_write is the push's rule, at receive time: a sender cannot backfill uptime.

A node's newest samples older than its interval are telemetry at their own
time, never an observation (and past TELEMETRY_MAX_AGE_S, nothing); ``up``
0 is a failed observation; Prometheus' staleness markers are no values; a
node whose samples prove no GPU is not written, while the request's other
nodes are (one bad node must not make Prometheus drop the whole fleet).
"""

from __future__ import annotations

import struct

from collector.prompb import STALE_NAN_BITS, encode
from collector.remote_write import TELEMETRY_MAX_AGE_S
from tests.collector_harness import FLEET_PROM, register, rejects, sample, scrape_metrics
from tests.remotewrite import now_ms, series_of, write

STALE_NAN = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]


async def test_samples_older_than_the_nodes_interval_are_telemetry_at_their_own_time_not_an_observation(
        client, storage, operator_token):
    node, _ = await register(client, operator_token, interval_s=15)
    sent_ms = now_ms() - 16_000
    response = await write(client, operator_token, encode(series_of(FLEET_PROM, node, sent_ms)))
    assert response.status == 204
    [late] = storage.committed
    assert late.telemetry_only and late.ok and len(late.payload.samples) > 0
    assert round(late.received_at.timestamp() * 1000) == sent_ms  # the sender's time, for telemetry only
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_remote_write_samples_total", outcome="telemetry_only") > 0
    fresh = await write(client, operator_token, encode(series_of(FLEET_PROM, node, now_ms() - 14_000)))
    assert fresh.status == 204  # a late scrape does not take the node's turn
    assert [(b.ok, b.telemetry_only) for b in storage.committed] == [(True, True), (True, False)]


async def test_samples_older_than_the_telemetry_limit_are_dropped_as_stale(client, storage, operator_token):
    node, _ = await register(client, operator_token, interval_s=15)
    old_ms = now_ms() - int(TELEMETRY_MAX_AGE_S * 1000) - 1_000
    response = await write(client, operator_token, encode(series_of(FLEET_PROM, node, old_ms)))
    assert response.status == 204 and storage.committed == []
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_remote_write_samples_total", outcome="stale") > 0


async def test_up_zero_is_a_failed_observation_and_staleness_markers_are_no_values(client, storage, operator_token):
    node, _ = await register(client, operator_token)
    t = now_ms()
    gone = [(labels, [(t, STALE_NAN)]) for labels, _ in series_of(FLEET_PROM, node, t, up=None)]
    response = await write(client, operator_token, encode(gone + series_of("", node, t, up=0.0)))
    assert response.status == 204
    [batch] = storage.committed
    assert not batch.ok and batch.payload is None and "up 0" in batch.error
    metrics = await scrape_metrics(client)
    assert sample(metrics, "fleetscope_collector_remote_write_samples_total", outcome="stale_marker") == len(gone)
    assert sample(metrics, "fleetscope_collector_rejects_total", reason="nan") == 0


async def test_a_node_proving_no_gpu_is_not_written_but_the_others_are(client, storage, operator_token):
    good, _ = await register(client, operator_token, "good")
    empty, _ = await register(client, operator_token, "up-only")
    fake, _ = await register(client, operator_token, "fake")
    forged = FLEET_PROM.decode().replace("GPU-", "NOT-A-GPU-")
    body = encode(series_of(FLEET_PROM, good) + series_of("", empty) + series_of(forged, fake))
    response = await write(client, operator_token, body)
    assert response.status == 204
    assert [(b.node_id, b.ok) for b in storage.committed] == [(good, True)]
    assert await rejects(client, "implausible_uuid") == 1
