"""A request that repeats series of earlier requests, cut elsewhere, with new values and times, reads what protobuf reads.

The receiver recognises series it has seen in the same order (a run,
collector/series_table.py) by comparing the request's bytes with the run's,
values and timestamps left out. Hypothesis draws a sequence of series, then
requests over it as a Prometheus shard sends them: windows starting and
ending anywhere, each sample's value redrawn (0.0, which changes the series'
encoding, NaN, any float) and its timestamp too (of any size), sometimes a
series left out or repeated; every request must give, per node, exactly the
samples of protobuf's own reading.
"""

from __future__ import annotations

import cramjam
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.prompb import RawWriteRequest, encode
from tests.test_remote_write_decoding import _normal, _receiver, _rows

NAMES = st.sampled_from(["DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "up", "scrape_duration_seconds"])
LABELS = st.tuples(NAMES, st.text(alphabet="\x12\x10\x09\x07ab0", max_size=6), st.integers(1, 3))
VALUES = st.one_of(st.just(0.0), st.just(1.0), st.floats(allow_nan=True))
TIMES = st.sampled_from([1_764_000_000_000, 1_764_000_015_000, 1_764_000_015_123, 5, 2**42])
WINDOWS = st.lists(st.tuples(st.integers(0, 30), st.integers(1, 30), st.booleans()), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.lists(LABELS, min_size=1, max_size=30, unique=True), WINDOWS, st.data())
def test_a_window_over_series_seen_before_reads_what_protobuf_reads(labels, windows, data):
    receiver = _receiver()
    for first, size, odd in [(0, len(labels), False), *windows]:
        chosen = labels[first:first + size] or labels[:1]
        if odd:  # a series left out, or sent twice
            chosen = chosen[1:] if len(chosen) > 1 else chosen * 2
        body = [({"__name__": name, "v": value, "fleetscope_node_id": str(node)},
                 [(data.draw(TIMES), data.draw(VALUES))]) for name, value, node in chosen]
        raw = bytes(cramjam.snappy.decompress_raw(encode(body)))
        nodes, ups = receiver._decode(raw)
        slow_nodes: dict = {}
        slow_ups: dict = {}
        for s in RawWriteRequest.FromString(raw).timeseries:
            receiver._slow_series(s, slow_nodes, slow_ups)
        assert _normal(_rows(nodes), ups) == _normal(slow_nodes, slow_ups)


def test_a_request_seen_before_is_read_from_its_run():
    """The second request with the same series (new values) is recognised whole: no series visited one by one."""
    receiver = _receiver()
    labels = [{"__name__": "DCGM_FI_DEV_GPU_TEMP", "gpu": str(g), "fleetscope_node_id": "7"} for g in range(8)]
    for round_ in range(2):
        raw = bytes(cramjam.snappy.decompress_raw(
            encode([(label, [(1_764_000_000_000 + round_, 40.0 + round_)]) for label in labels])))
        nodes, _ = receiver._decode(raw)
        assert nodes[7][2].tolist() == [40.0 + round_] * 8
        assert nodes[7][1].tolist() == [1_764_000_000_000 + round_] * 8
    assert list(receiver._series._runs) == [0]  # (a request read series by series would be kept as run 1)


def test_runs_past_their_byte_budget_are_dropped_oldest_first(monkeypatch):
    """Series gone for good pin no request's bytes: past RUN_BYTES_KEPT the oldest runs go, and are read again series by series."""
    from collector import series_table

    monkeypatch.setattr(series_table, "RUN_BYTES_KEPT", 1)
    receiver = _receiver()
    for node in (1, 2, 3, 1):
        body = [({"__name__": "DCGM_FI_DEV_GPU_TEMP", "gpu": str(g), "fleetscope_node_id": str(node)},
                 [(1_764_000_000_000, 40.0)]) for g in range(4)]
        nodes, _ = receiver._decode(bytes(cramjam.snappy.decompress_raw(encode(body))))
        assert nodes[node][2].tolist() == [40.0] * 4
    table = receiver._series
    assert list(table._runs) == [3]  # (node 1's first run dropped: its request was read again, as run 3)
    assert table._run_bytes == table._runs[3].template.size
    assert list(table._groupings) == [3]
