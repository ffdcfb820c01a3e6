"""The receiver's fast split of each series reads exactly what protobuf's own parse of the request reads.

Hypothesis draws series whose label values hold the bytes the fast path
looks for (0x12, 0x10, 0x09, 0x07), values of 0.0 (left out of the encoding),
NaN and any float, timestamps of any size, and several samples per series;
`_decode` must give the same samples per node as the message-object path.
"""

from __future__ import annotations

import struct

import cramjam
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.prompb import RawWriteRequest, encode
from collector.remote_write import RemoteWriteReceiver
from collector.selfmetrics import SelfMetrics
from collector.settings import CollectorSettings

TRICKY = st.text(alphabet=st.sampled_from(["\x12", "\x10", "\x09", "\x07", "a", "0", "\u00e9", "{"]), max_size=20)
SERIES = st.lists(
    st.tuples(st.sampled_from(["DCGM_FI_DEV_GPU_TEMP", "up", "scrape_samples_post_metric_relabeling", "other"]), TRICKY, st.integers(1, 3),
              st.lists(st.tuples(st.sampled_from([0, 1, 1_764_000_000_000, 1_764_000_000_123, 2**42, 2**35 - 1]),
                                 st.one_of(st.just(0.0), st.floats(allow_nan=True))), min_size=1, max_size=3)),
    max_size=12)


def _receiver() -> RemoteWriteReceiver:
    return RemoteWriteReceiver(auth=None, pool=None, appendable=None,
                               metrics=SelfMetrics(collector_id="t", shard="0/1"),
                               settings=CollectorSettings(dsn="postgresql://unused"))


def _rows(by_node: dict) -> dict:
    """``_decode``'s columns per node as rows, as ``_slow_series`` gives them."""
    return {n: list(zip(entries, times.tolist(), xs.tolist())) for n, (entries, times, xs) in by_node.items()}


def _normal(by_node: dict, ups: dict) -> tuple:
    def key(x: float) -> str:
        return struct.pack("<d", x).hex()  # exact, NaN payloads included
    return ({n: sorted((repr(e), t, key(x)) for e, t, x in rows) for n, rows in by_node.items()},
            {n: sorted((role, t, key(x)) for role, t, x in rows) for n, rows in ups.items()})


@settings(max_examples=300, deadline=None)
@given(SERIES)
def test_the_fast_split_reads_what_the_message_objects_read(series):
    body = [({"__name__": name, "UUID": "GPU-" + "1" * 8 + "-1111-1111-1111-" + "1" * 12, "v": value,
              "fleetscope_node_id": str(node)}, samples) for name, value, node, samples in series]
    raw = bytes(cramjam.snappy.decompress_raw(encode(body)))
    receiver = _receiver()
    nodes, ups = receiver._decode(raw)
    fast = _rows(nodes), ups
    nodes, ups = receiver._decode(raw)  # now from the table of classified series
    fast_again = _rows(nodes), ups
    slow_nodes: dict = {}
    slow_ups: dict = {}
    for s in RawWriteRequest.FromString(raw).timeseries:
        receiver._slow_series(s, slow_nodes, slow_ups)
    assert _normal(*fast) == _normal(*fast_again) == _normal(slow_nodes, slow_ups)
