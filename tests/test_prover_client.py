"""The exporter's proof client speaks docs/proof.md's wire format to a collector on 127.0.0.1.

The collector here is a small aiohttp app that implements the four
endpoints with fleetscope.proof (keys, deadline, rows and columns named after
the commitment, judge on the opening records) exactly as the wire format and
collector/proof.py do, so each test sees what the client sent and the
verdicts it got; tests/test_proof_end_to_end.py runs the real collector.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from exporters.prover import NumpyProver, SimProver
from exporters.proving import ProofClient, proof_base
from fleetscope import gpu_models, proof

TOKEN = "node-token-for-proofs"
NODE_ID = 17
SCALE = 1e-6
RTX4090 = "NVIDIA GeForce RTX 4090"


def gpu(uuid: str, model: str = RTX4090, **overrides) -> dict:
    row = gpu_models.lookup(model)
    return {"gpu_uuid": uuid, "model": row.model, **proof.size_for(row, scale=SCALE).as_dict(), **overrides}


class Collector:
    """The proof endpoints of docs/proof.md for one node, judged with fleetscope.proof."""

    def __init__(self) -> None:
        self.mode = "ok"            # ok | 503 | 401
        self.pending: list[dict] = []  # challenges to hand out, oldest first
        self.paths: list[str] = []     # every request's path, in order
        self.rounds: dict[int, dict] = {}
        self.verdicts: dict[str, proof.Verdict] = {}
        self.send_node_id = True

    def offer(self, gpus: list[dict]) -> int:
        round_id = len(self.rounds) + 1
        self.rounds[round_id] = {"gpus": {g["gpu_uuid"]: g for g in gpus}, "seed": proof.new_seed(),
                                 "started": None, "roots": {}, "named": {}, "openings": {}}
        body = {"protocol": 1, "round_id": round_id, "gpus": gpus}
        if self.send_node_id:
            body["node_id"] = NODE_ID
        self.pending.append(body)
        return round_id

    def _size(self, entry: dict) -> proof.Size:
        return proof.Size(n=entry["n"], k=entry["k"], reference_tflops=entry["reference_tflops"],
                          budget_s=entry["budget_s"])

    @web.middleware
    async def gate(self, request: web.Request, handler):
        self.paths.append(request.path)
        if self.mode == "503":
            return web.json_response({"error": "unavailable", "reason": "maintenance"}, status=503)
        if self.mode == "401" or request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized", "reason": "bad token"}, status=401)
        return await handler(request)

    async def challenge(self, request: web.Request) -> web.Response:
        wait = float(request.query.get("wait", 25))
        deadline = time.monotonic() + min(wait, 0.5)
        while not self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self.pending:
            return web.Response(status=204)
        return web.json_response(self.pending.pop(0))

    async def start(self, request: web.Request) -> web.Response:
        body = await request.json()
        r = self.rounds.get(body.get("round_id"))
        if r is None:
            return web.json_response({"error": "not_found", "reason": "no such round"}, status=404)
        if r["started"] is not None:
            return web.json_response({"error": "conflict", "reason": "already started"}, status=409)
        r["started"] = time.monotonic()
        deadlines = {uuid: self._size(g).budget_s for uuid, g in r["gpus"].items()}
        return web.json_response({"round_id": body["round_id"], "seed": r["seed"],
                                  "deadline_s": min(deadlines.values()), "deadlines": deadlines})

    async def commit(self, request: web.Request) -> web.Response:
        body = await request.json()
        r = self.rounds[body["round_id"]]
        uuid = body["gpu_uuid"]
        size = self._size(r["gpus"][uuid])
        seconds = time.monotonic() - r["started"]
        if seconds > proof.deadline_s(size, 0.0):
            self.verdicts[uuid] = proof.late(size, seconds=seconds, deadline=proof.deadline_s(size, 0.0))
            return web.json_response({"error": "late", "reason": self.verdicts[uuid].reason}, status=409)
        r["roots"][uuid] = (bytes.fromhex(body["root"]), seconds)
        rows, columns = proof.choose_entries(size.n)
        named = r["named"][uuid] = {"rows": rows, "columns": columns}
        return web.json_response(named)

    async def open(self, request: web.Request) -> web.Response:
        body = await request.json()
        r = self.rounds[body["round_id"]]
        uuid = body["gpu_uuid"]
        size = self._size(r["gpus"][uuid])
        root, seconds = r["roots"][uuid]
        named = r["named"][uuid]
        openings = r["openings"][uuid] = body["openings"]
        verdict = proof.judge(proof.keys(r["seed"], NODE_ID, uuid), size, root=root, rows=named["rows"],
                              cols=named["columns"], openings=openings, seconds=seconds,
                              deadline=proof.deadline_s(size, 0.0))
        self.verdicts[uuid] = verdict
        return web.json_response(verdict.as_dict(), status=200 if verdict.verdict == "passed" else 422)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.gate])
        app.router.add_get("/api/v1/proof/challenge", self.challenge)
        app.router.add_post("/api/v1/proof/start", self.start)
        app.router.add_post("/api/v1/proof/commit", self.commit)
        app.router.add_post("/api/v1/proof/open", self.open)
        return app


@pytest.fixture
async def collector(aiohttp_server):
    fake = Collector()
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


def client_for(collector: Collector, prover, **options) -> ProofClient:
    return ProofClient(collector.base_url, TOKEN, prover, wait_s=1, **options)


async def test_an_honest_host_proves_every_gpu_and_each_passes(collector):
    collector.offer([gpu("GPU-aaaaaaaa-0000-0000-0000-000000000001"), gpu("GPU-aaaaaaaa-0000-0000-0000-000000000002")])
    client = client_for(collector, SimProver())
    started = time.monotonic()
    assert await asyncio.to_thread(client.step) == 0.0
    elapsed = time.monotonic() - started
    assert {u: v.verdict for u, v in collector.verdicts.items()} == {
        "GPU-aaaaaaaa-0000-0000-0000-000000000001": "passed", "GPU-aaaaaaaa-0000-0000-0000-000000000002": "passed"}
    assert elapsed < 5.0  # both GPUs at once, not one after the other (3 s each)
    assert [o["verdict"] for o in client.last_round.values()] == ["passed", "passed"]
    for uuid, named in collector.rounds[1]["named"].items():  # exactly the chunks of the named entries
        assert [o["leaf"] for o in collector.rounds[1]["openings"][uuid]] == \
            proof.checked_leaves(collector.rounds[1]["gpus"][uuid]["n"], named["rows"], named["columns"])
    assert collector.paths[:2] == ["/api/v1/proof/challenge", "/api/v1/proof/start"]
    assert collector.paths.count("/api/v1/proof/commit") == collector.paths.count("/api/v1/proof/open") == 2
    registry = CollectorRegistry()
    registry.register(client)
    text = generate_latest(registry).decode()
    assert 'fleet_exporter_proof_verdicts_total{verdict="passed"} 2.0' in text
    assert "fleet_exporter_proof_rounds_total 1.0" in text


async def test_each_gpu_is_committed_as_soon_as_its_root_is_ready(collector):
    # One real GPU for two claimed: the first root goes out before the second is computed.
    uuids = ["GPU-bbbbbbbb-0000-0000-0000-000000000001", "GPU-bbbbbbbb-0000-0000-0000-000000000002"]
    collector.offer([gpu(u) for u in uuids])
    client = client_for(collector, SimProver(cheat="one_for_many"))
    await asyncio.to_thread(client.step)
    assert collector.paths[2:] == ["/api/v1/proof/commit", "/api/v1/proof/open", "/api/v1/proof/commit"]
    assert collector.verdicts[uuids[0]].verdict == "passed"
    assert collector.verdicts[uuids[1]].reason.startswith("late")
    assert client.last_round[uuids[1]]["verdict"] == "failed"
    assert client.verdicts == {"passed": 1, "failed": 1}


async def test_garbage_is_refused_as_a_wrong_result(collector):
    collector.offer([gpu("GPU-cccccccc-0000-0000-0000-000000000001")])
    client = client_for(collector, SimProver(cheat="garbage"))
    await asyncio.to_thread(client.step)
    [outcome] = client.last_round.values()
    assert outcome["verdict"] == "failed" and outcome["reason"].startswith("wrong result")


async def test_a_silent_host_takes_its_challenge_and_sends_nothing(collector):
    collector.offer([gpu("GPU-dddddddd-0000-0000-0000-000000000001")])
    client = client_for(collector, SimProver(cheat="silent"))
    await asyncio.to_thread(client.step)
    assert collector.paths == ["/api/v1/proof/challenge"]
    assert collector.rounds[1]["started"] is None
    assert client.rounds == 1 and not client.verdicts


async def test_no_work_is_a_204_and_the_client_polls_again_at_once(collector):
    client = client_for(collector, NumpyProver())
    assert await asyncio.to_thread(client.step) == 0.0
    assert collector.paths == ["/api/v1/proof/challenge"]
    assert client.rounds == 0


async def test_a_collector_error_backs_off_exponentially_with_jitter(collector):
    collector.mode = "503"
    client = client_for(collector, NumpyProver(), backoff_base=0.2, backoff_max=1.0)
    delays = [await asyncio.to_thread(client.step) for _ in range(4)]
    assert 0.1 <= delays[0] <= 0.2 and 0.2 <= delays[1] <= 0.4 and 0.4 <= delays[2] <= 0.8
    assert 0.5 <= delays[3] <= 1.0
    assert client.poll_errors == 4
    collector.mode = "ok"
    assert await asyncio.to_thread(client.step) == 0.0  # back: no backoff after a good poll


async def test_a_refused_poll_is_logged_and_retried_later(collector, caplog):
    client = ProofClient(collector.base_url, "wrong-token", NumpyProver(), wait_s=1, refused_wait=7.0)
    assert await asyncio.to_thread(client.step) == 7.0
    assert "HTTP 401 bad token" in caplog.text


async def test_a_collector_that_is_not_there_is_retried(unused_tcp_port):
    client = ProofClient(f"http://127.0.0.1:{unused_tcp_port}", TOKEN, NumpyProver(), wait_s=1, backoff_base=0.5)
    delay = await asyncio.to_thread(client.step)
    assert 0.25 <= delay <= 0.5 and client.poll_errors == 1


async def test_a_late_commitment_is_a_failed_verdict(collector):
    # A budget no CPU meets: the collector answers 409 late.
    collector.offer([gpu("GPU-eeeeeeee-0000-0000-0000-000000000001", budget_s=0.0001)])
    client = client_for(collector, NumpyProver())
    await asyncio.to_thread(client.step)
    [outcome] = client.last_round.values()
    assert outcome["verdict"] == "failed" and "HTTP 409" in outcome["reason"]
    assert "/api/v1/proof/open" not in collector.paths


async def test_the_node_id_can_come_from_the_configuration(collector):
    collector.send_node_id = False
    collector.offer([gpu("GPU-ffffffff-0000-0000-0000-000000000001")])
    client = client_for(collector, NumpyProver(), node_id=NODE_ID)
    await asyncio.to_thread(client.step)
    assert [o["verdict"] for o in client.last_round.values()] == ["passed"]


async def test_a_configured_node_id_overrides_the_challenges(collector):
    # The wrong id generates other matrices: the proof is a wrong result.
    collector.offer([gpu("GPU-ffffffff-0000-0000-0000-000000000002")])
    client = client_for(collector, NumpyProver(), node_id=NODE_ID + 1)
    await asyncio.to_thread(client.step)
    [outcome] = client.last_round.values()
    assert outcome["verdict"] == "failed" and outcome["reason"].startswith("wrong result")


async def test_without_a_node_id_from_either_the_round_is_given_up(collector, caplog):
    collector.send_node_id = False
    collector.offer([gpu("GPU-ffffffff-0000-0000-0000-000000000003")])
    client = client_for(collector, NumpyProver())
    await asyncio.to_thread(client.step)
    assert client.last_round == {} and "names no node id" in caplog.text
    assert "/api/v1/proof/commit" not in collector.paths


async def test_the_client_thread_proves_until_stopped(collector):
    client = client_for(collector, NumpyProver())
    client.start()
    try:
        await asyncio.sleep(0.2)
        collector.offer([gpu("GPU-12345678-0000-0000-0000-000000000001")])
        deadline = time.monotonic() + 10
        while not collector.verdicts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [v.verdict for v in collector.verdicts.values()] == ["passed"]
    finally:
        await asyncio.to_thread(client.stop, 5)
    assert client._thread is not None and not client._thread.is_alive()


def test_the_proof_endpoints_live_beside_the_push_endpoint():
    assert proof_base("http://c.example:9300/api/v1/push") == "http://c.example:9300"
    assert proof_base("https://c.example/fleet/api/v1/push/") == "https://c.example/fleet"
    assert proof_base("http://c.example:9300/ingest") == "http://c.example:9300"
