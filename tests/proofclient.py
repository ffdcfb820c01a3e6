"""A small honest prover for the collector's proof-of-GPU tests, speaking docs/proof.md's wire format over HTTP.

It computes C = A @ B in float32 with NumPy from fleetscope.proof's blocks,
builds the Merkle tree over C's chunks and opens the chunks of the entries the collector names:
everything the real prover (exporters/prover.py) does, on the CPU. Its knobs
play the cheaters: ``result`` replaces C (garbage), ``speed_flops`` makes it
take as long as a device of that speed would (it sleeps the difference),
and each step can be driven by hand (``poll``, ``start``, ``commit``, ``open``).

Also here: a collector fixture with tiny proofs (``proof_client``), the GPU
claims a test node reports (``claim_gpus``), and ``offer_round``, which opens
a round while the given provers wait.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pytest

from collector.app import PROOFS, make_app
from collector.ingest import MemoryAppendable
from fleetscope import proof
from tests.collector_harness import bearer, collector_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp.test_utils import TestClient

    from collector.proof import Proofs

# Proofs a CPU does in milliseconds: an A100 claim gets n = 512, k = 1280.
TEST_SCALE = 1e-6
A100 = "NVIDIA A100-SXM4-80GB"
A100_MEMORY = 80 * 2**30


def proof_settings(dsn: str, tmp_path, **overrides):
    return collector_settings(dsn, tmp_path, proof_scale=TEST_SCALE, proof_share=1.0, **overrides)


@pytest.fixture
async def proof_client(aiohttp_client, dsn, tmp_path):
    """A real collector on 127.0.0.1 with tiny proofs, every waiting node chosen, and no round loop (tests open
    rounds with ``proofs_of(client).open_round()``)."""
    client = await aiohttp_client(make_app(proof_settings(dsn, tmp_path), appendable=MemoryAppendable()))
    yield client
    await client.close()


def proofs_of(client: TestClient) -> Proofs:
    return client.server.app[PROOFS]


def claim_gpus(dsn: str, node_id: int, uuids: list[str], *, model: str = A100, memory: int = A100_MEMORY) -> None:
    """What a push of this node would have stored: its GPUs' identities and its current GPU set."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for index, gpu_uuid in enumerate(uuids):
            conn.execute("INSERT INTO gpus (node_id, gpu_uuid, gpu_index, model, memory_total_bytes, first_seen,"
                         " last_seen) VALUES (%s, %s, %s, %s, %s, now() - interval '1 hour', now())",
                         (node_id, gpu_uuid, index, model, memory))
        conn.execute("INSERT INTO node_gpu_sets (node_id, since, healthy) VALUES (%s, now() - interval '1 hour', %s)",
                     (node_id, uuids))


def challenge_rows(dsn: str, **where: Any) -> list[dict[str, Any]]:
    """proof_challenges rows as dicts, filtered by equal columns, in (round, node, uuid) order."""
    clause = " AND ".join(f"{k} = %({k})s" for k in where) or "true"
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(f"SELECT * FROM proof_challenges WHERE {clause} ORDER BY round_id, node_id, gpu_uuid",
                           where)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def open_findings(dsn: str, node_id: int) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT gpu_uuid, evidence, resolved_at, resolution FROM integrity_findings"
                            " WHERE kind = 'proof_failed' AND node_id = %s ORDER BY finding_id", (node_id,)).fetchall()


@dataclass
class Work:
    """One GPU's answer: C, the Merkle levels over its chunks, and the root."""

    c: np.ndarray
    levels: list[list[bytes]]

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def opening(self, leaf: int) -> dict[str, Any]:
        """One leaf's opening record (fleetscope.proof.opening): its chunk of C and its path."""
        data = np.ascontiguousarray(self.c, dtype="<f4").reshape(-1)
        chunk = data[leaf * proof.CHUNK_ENTRIES:(leaf + 1) * proof.CHUNK_ENTRIES].tobytes()
        return proof.opening(leaf, chunk, proof.merkle_path(self.levels, leaf))

    def openings(self, named: dict[str, list[int]]) -> list[dict[str, Any]]:
        """The records for the entries a commit reply names ({"rows", "columns"})."""
        n = self.c.shape[0]
        return [self.opening(leaf) for leaf in proof.checked_leaves(n, named["rows"], named["columns"])]


def compute(seed: str, node_id: int, gpu: dict[str, Any]) -> np.ndarray:
    """C = A @ B in float32 for one challenged GPU."""
    key = proof.keys(seed, node_id, gpu["gpu_uuid"])
    n, k = gpu["n"], gpu["k"]
    a = proof.a_block(key, np.arange(n), np.arange(k))
    b = proof.b_block(key, np.arange(k), np.arange(n))
    return a @ b


def commit_to(c: np.ndarray) -> Work:
    return Work(c, proof.merkle_levels(proof.chunk_leaves(c)))


@dataclass
class Prover:
    """A node's prover on the test collector. Drive it step by step, or ``prove`` a whole offer."""

    client: TestClient
    node_id: int
    token: str
    # Replace C before committing (garbage, another round's answer): gpu entry, honest C -> C sent.
    result: Callable[[dict[str, Any], np.ndarray], np.ndarray] | None = None
    # Emulate a device of this speed: each GPU's proof takes at least flops / speed_flops seconds,
    # one after the other (one device serving every claimed GPU).
    speed_flops: float | None = None
    works: dict[str, Work] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    async def poll(self, wait: float = 5) -> dict[str, Any] | None:
        response = await self.client.get(f"/api/v1/proof/challenge?wait={wait:g}", headers=self.headers)
        assert response.status in (200, 204), await response.text()
        return await response.json() if response.status == 200 else None

    async def start(self, round_id: int) -> tuple[int, dict[str, Any]]:
        return await self._post("start", {"round_id": round_id})

    async def commit(self, round_id: int, gpu_uuid: str, root: bytes | str) -> tuple[int, dict[str, Any]]:
        root = root.hex() if isinstance(root, bytes) else root
        return await self._post("commit", {"round_id": round_id, "gpu_uuid": gpu_uuid, "root": root})

    async def open(self, round_id: int, gpu_uuid: str, named: dict[str, list[int]], work: Work | None = None):
        """Open the entries ``named`` (the commit reply's {"rows", "columns"})."""
        work = work or self.works[gpu_uuid]
        return await self._post("open", {"round_id": round_id, "gpu_uuid": gpu_uuid,
                                         "openings": work.openings(named)})

    async def _post(self, step: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = await self.client.post(f"/api/v1/proof/{step}", json=body, headers=self.headers)
        return response.status, await response.json()

    async def prove(self, offer: dict[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
        """Answer a whole challenge, GPU after GPU; each GPU's last answer (status, JSON)."""
        round_id = offer["round_id"]
        status, started = await self.start(round_id)
        assert status == 200, started
        loop = asyncio.get_running_loop()
        began = loop.time()
        busy_until = began
        answers = {}
        for gpu in offer["gpus"]:
            c = compute(started["seed"], self.node_id, gpu)
            if self.result is not None:
                c = self.result(gpu, c)
            work = self.works[gpu["gpu_uuid"]] = commit_to(c)
            if self.speed_flops is not None:
                busy_until += 2.0 * gpu["n"] * gpu["n"] * gpu["k"] / self.speed_flops
                await asyncio.sleep(max(0.0, busy_until - loop.time()))
            status, committed = await self.commit(round_id, gpu["gpu_uuid"], work.root)
            if status != 200:
                answers[gpu["gpu_uuid"]] = (status, committed)
                continue
            answers[gpu["gpu_uuid"]] = await self.open(round_id, gpu["gpu_uuid"], committed)
        return answers


async def claiming_node(client, operator_token: str, dsn: str, uuids: list[str], **prover_options):
    """A node registered through the API, claiming ``uuids``, and its prover: (node_id, token, prover)."""
    from tests.collector_harness import register

    node_id, token = await register(client, operator_token)
    claim_gpus(dsn, node_id, uuids)
    return node_id, token, Prover(client, node_id, token, **prover_options)


async def offer_round(client: TestClient, provers: list[Prover], *, wait: float = 5) -> tuple[int | None, list]:
    """Open a round while ``provers`` wait in their long-polls; (round id, each prover's offer or None)."""
    polls = [asyncio.create_task(p.poll(wait)) for p in provers]
    proofs = proofs_of(client)
    for _ in range(500):
        if all(p.node_id in proofs.waiting_nodes for p in provers):
            break
        await asyncio.sleep(0.01)
    round_id = await proofs.open_round()
    return round_id, list(await asyncio.gather(*polls))  # the provers not chosen wait out ``wait``


@dataclass
class Started:
    """One claimed GPU's proof, started: the honest work computed but nothing committed yet."""

    node_id: int
    token: str
    prover: Prover
    round_id: int
    gpu: dict[str, Any]
    started: dict[str, Any]
    work: Work


async def started_proof(client: TestClient, operator_token: str, dsn: str, uuid: str) -> Started:
    """A node claiming ``uuid``, offered a round, its proof started (200) and the right answer worked out."""
    node_id, token, prover = await claiming_node(client, operator_token, dsn, [uuid])
    round_id, [offer] = await offer_round(client, [prover])
    gpu = offer["gpus"][0]
    status, started = await prover.start(round_id)
    assert status == 200, started
    return Started(node_id, token, prover, round_id, gpu, started, commit_to(compute(started["seed"], node_id, gpu)))
