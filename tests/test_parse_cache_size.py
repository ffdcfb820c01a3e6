"""A warm target's parse cache keeps a few KB, not its payload's text.

At 30,000 targets the collector must stay within 400 MB (docs/benchmarks-
scrape.md), so a warm 8-GPU target may keep about 8 KB; it kept ~170 KB
(six copies of the payload) before the cache kept only a hash of the text,
its GPUs and a layout shared by every host of the same shape.
"""

from __future__ import annotations

import gc
import re
import tracemalloc
from pathlib import Path

from collector.parse import PayloadParser, SeriesCache

PAYLOADS = Path(__file__).parent / "fixtures" / "payloads"
UUID = re.compile(r"GPU-[0-9a-f]{8}(?=-)")
HOSTS = 20
PER_TARGET_BOUND = 8 * 1024


def host(text: str, number: int, scrape: int) -> str:
    """The payload as another host would send it: own UUIDs and name, new values."""
    text = UUID.sub(lambda m: f"GPU-{number:04x}{m.group(0)[8:]}", text)
    text = text.replace('Hostname="dgx-a100-07"', f'Hostname="node-{number}"')
    return text.replace("} 0\n", f"}} {scrape}\n")


def test_a_warm_cache_of_an_8_gpu_dcgm_host_keeps_under_8_kib():
    text = (PAYLOADS / "dcgm_exporter_12fields_a100x8.prom").read_text()
    parser = PayloadParser()
    # A first host of the shape, kept alive: its shared layout is not counted.
    first = SeriesCache()
    parser.parse(host(text, 0, 1), cache=first)
    bodies = [(host(text, n, 1), host(text, n, 2)) for n in range(1, HOSTS + 1)]
    caches = []
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for one, two in bodies:
            cache = SeriesCache()
            parser.parse(one, cache=cache)
            assert parser.parse(two, cache=cache).path == "warm"
            caches.append(cache)
        del cache
        gc.collect()
        per_target = (tracemalloc.get_traced_memory()[0] - before) / HOSTS
    finally:
        tracemalloc.stop()
    assert len(text) > 20_000
    assert per_target < PER_TARGET_BOUND, f"{per_target:.0f} bytes per warm cache"
