"""A node registered with a scrape_url is first scraped within one interval of its registration (issue 15, item 8).

Before, new targets were found only by the full refresh (every 30 s), so a
new node showed offline for up to half a minute. The scraper here keeps its
default refresh; the node is registered through the collector's own API.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from collector.ingest import MemoryAppendable
from collector.scrape import Scraper
from exporters.simfleet import SimServer
from exporters.sim import HostSpec, SimFleet
from tests.collector_harness import register

INTERVAL_S = 5


async def test_a_new_node_is_scraped_within_one_interval_of_its_registration(client, operator_token, dsn):
    fleet = SimFleet(3, [HostSpec("new", n_gpus=2)])
    memory = MemoryAppendable()
    async with SimServer(fleet) as server:
        async with Scraper(dsn, memory, registry=CollectorRegistry()) as scraper:
            await asyncio.sleep(0.2)  # the scraper has read its (empty) target list
            registered = time.time()
            node_id, _ = await register(client, operator_token, "new", scrape_url=server.url(0),
                                        interval_s=INTERVAL_S)
            while not memory.committed and time.time() - registered < INTERVAL_S + 2:
                await asyncio.sleep(0.05)
            assert node_id in scraper.targets
    assert memory.committed, "not scraped within one interval of its registration"
    first = memory.committed[0]
    assert first.node_id == node_id and first.ok
    assert first.received_at.timestamp() - registered <= INTERVAL_S
