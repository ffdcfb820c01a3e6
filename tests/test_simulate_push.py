"""Push mode: every simulated host pushes gzip'd text with its own node token, every interval."""

from __future__ import annotations

import time
from collections import defaultdict

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from exporters.simfleet import push_fleet
from exporters.sim import SimFleet


async def test_each_host_pushes_its_render_with_its_own_token_every_interval():
    fleet = SimFleet.from_scenario(5, [{"profile": "healthy", "count": 4, "gpus": 2}])
    tokens = [f"fsn_token{i}" for i in range(len(fleet))]
    received: dict[str, list[tuple[float, bytes]]] = defaultdict(list)

    async def push(request: web.Request) -> web.Response:
        assert request.headers["Content-Encoding"] == "gzip"
        token = request.headers["Authorization"].removeprefix("Bearer ")
        # aiohttp's server inflates the body by its Content-Encoding (a body
        # that was not gzip would fail right here).
        received[token].append((time.monotonic(), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v1/push", push)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/push"
    try:
        results = await push_fleet(fleet, url, tokens, interval_s=0.4, duration_s=1.3, seed=2)
    finally:
        await runner.cleanup()
    assert results == {204: sum(len(v) for v in received.values())}
    assert set(received) == set(tokens)
    firsts = sorted(pushes[0][0] for pushes in received.values())
    assert firsts[-1] - firsts[0] > 0.05  # jittered start, not all at once
    for i, token in enumerate(tokens):
        pushes = received[token]
        assert len(pushes) in (3, 4)
        gaps = [b[0] - a[0] for a, b in zip(pushes, pushes[1:])]
        assert all(0.3 < g < 0.5 for g in gaps)
        text = pushes[-1][1].decode()
        hostnames = {s.labels.get("Hostname") for f in text_string_to_metric_families(text)
                     for s in f.samples if f.name == "DCGM_FI_DEV_GPU_UTIL"}
        assert hostnames == {fleet.hostname(i)}
