"""Each prover backend commits to C's chunks and opens the named entries' chunks that fleetscope.proof.judge passes."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from exporters import prover as provers
from exporters.prover import NumpyProver, Task
from fleetscope import gpu_models, proof

NODE_ID = 42
UUID = "GPU-6e1b1c3a-51a8-4b8e-9a0c-2d6f1e7b9c01"
# The demo's scale: an A100's proof is 512 x 1280 x 512 (0.7 GFLOP).
SCALE = 1e-6


def task_for(model: str, uuid: str = UUID, *, scale: float = SCALE) -> Task:
    row = gpu_models.lookup(model)
    size = proof.size_for(row, scale=scale)
    return Task.from_dict({"gpu_uuid": uuid, "model": row.model, **size.as_dict()})


def verdict_on(prover: provers.Prover, committed: provers.Committed, seed: str, *, seconds: float,
               node_id: int = NODE_ID) -> proof.Verdict:
    """What the collector decides: rows and columns drawn by the verifier, their chunks opened by the prover."""
    task = committed.task
    rows, cols = proof.choose_entries(task.n)
    openings = prover.open(committed, rows, cols)
    return proof.judge(proof.keys(seed, node_id, task.gpu_uuid), task.size, root=committed.root, rows=rows,
                       cols=cols, openings=openings, seconds=seconds, deadline=proof.deadline_s(task.size, 0.0))


def test_the_numpy_prover_passes_the_judge():
    task = task_for("NVIDIA A100-SXM4-80GB")
    seed = proof.new_seed()
    started = time.monotonic()
    committed = NumpyProver().prove(seed, NODE_ID, task)
    verdict = verdict_on(NumpyProver(), committed, seed, seconds=time.monotonic() - started)
    assert verdict.verdict == "passed", verdict.reason
    assert (task.n, task.k) == (512, 1280)


def test_the_numpy_prover_passes_with_many_small_blocks_of_the_inner_dimension():
    task = task_for("NVIDIA GeForce RTX 4090")
    numpy_prover = NumpyProver(block_bytes=1)  # one SIZE_STEP of k at a time
    assert provers.block_size(task.n, task.k, 1) == proof.SIZE_STEP < task.k
    seed = proof.new_seed()
    committed = numpy_prover.prove(seed, NODE_ID, task)
    assert verdict_on(numpy_prover, committed, seed, seconds=0.1).verdict == "passed"


def test_an_opened_chunk_is_c_and_its_path_leads_to_the_root():
    task = task_for("NVIDIA GeForce RTX 4090")
    seed = proof.new_seed()
    committed = NumpyProver().prove(seed, NODE_ID, task)
    key = proof.keys(seed, NODE_ID, UUID)
    # Entries C[5, 3] and C[5, 300] are in two chunks of row 5 (n = 512: two chunks a row).
    openings = NumpyProver().open(committed, [5, 5], [3, 300])
    assert [o["leaf"] for o in openings] == [proof.leaf_of(5, 3, task.n), proof.leaf_of(5, 300, task.n)] == [10, 11]
    exact = proof.a_rows(key, np.array([5], dtype=np.uint32), task.k, dtype=np.float64) @ \
        proof.b_columns(key, np.arange(task.n, dtype=np.uint32), task.k, dtype=np.float64)
    for o, half in zip(openings, (slice(0, 256), slice(256, 512)), strict=True):
        chunk = base64.b64decode(o["chunk"])
        assert np.allclose(np.frombuffer(chunk, "<f4"), exact[0, half], atol=1e-3)
        path = [bytes.fromhex(p) for p in o["path"]]
        assert proof.root_from_path(proof.leaf_hash(chunk), o["leaf"], proof.leaf_count(task.n), path) \
            == committed.root


def test_another_node_or_seed_gets_other_work_so_a_commitment_cannot_be_reused():
    task = task_for("NVIDIA GeForce RTX 4090")
    seed = proof.new_seed()
    committed = NumpyProver().prove(seed, NODE_ID, task)
    verdict = verdict_on(NumpyProver(), committed, seed, seconds=0.1, node_id=NODE_ID + 1)
    assert verdict.verdict == "failed" and verdict.reason.startswith("wrong result")


def test_an_entry_outside_c_is_not_opened():
    task = task_for("NVIDIA GeForce RTX 4090")
    committed = NumpyProver().prove(proof.new_seed(), NODE_ID, task)
    with pytest.raises(ValueError, match="row 512 is outside C"):
        NumpyProver().open(committed, [task.n], [0])
    with pytest.raises(ValueError, match="column -1 is outside C"):
        NumpyProver().open(committed, [0], [-1])


def test_a_challenge_entry_without_its_reference_gets_it_from_the_budget():
    row = gpu_models.lookup("NVIDIA A100-SXM4-80GB")
    size = proof.size_for(row, scale=SCALE)
    task = Task.from_dict({"gpu_uuid": UUID, "model": row.model, "n": size.n, "k": size.k,
                           "budget_s": size.budget_s})
    assert task.reference_tflops == pytest.approx(size.reference_tflops, rel=1e-4)
    assert task.scale() == pytest.approx(SCALE, rel=1e-4)
    with pytest.raises(ValueError, match="malformed"):
        Task.from_dict({"gpu_uuid": UUID, "n": "many"})


def _cupy_or_skip():
    try:
        return provers.import_cupy()
    except RuntimeError as exc:
        pytest.skip(f"the CuPy prover needs CuPy and a CUDA GPU: {exc}")


def test_the_cupy_prover_passes_the_judge_on_each_gpu():
    cp = _cupy_or_skip()
    count = cp.cuda.runtime.getDeviceCount()
    uuids = [provers._cuda_uuid(cp.cuda.runtime.getDeviceProperties(i).get("uuid")) or f"GPU-index-{i}"
             for i in range(count)]
    devices = {uuid: i for i, uuid in enumerate(uuids)}
    cupy_prover = provers.CupyProver(lambda: devices)
    tasks = [task_for("NVIDIA A100-SXM4-80GB", uuid, scale=1e-3) for uuid in uuids]
    seed = proof.new_seed()
    done: dict[str, tuple[provers.Committed, float]] = {}
    started = time.monotonic()
    cupy_prover.prove_all(seed, NODE_ID, tasks, lambda c: done.__setitem__(c.task.gpu_uuid,
                                                                           (c, time.monotonic() - started)))
    assert set(done) == set(uuids)
    for committed, seconds in done.values():
        verdict = verdict_on(cupy_prover, committed, seed, seconds=seconds)
        assert verdict.verdict == "passed", verdict.reason


def test_the_cupy_tree_is_the_hashlib_tree_of_the_same_c():
    cp = _cupy_or_skip()
    cupy_prover = provers.CupyProver(lambda: {UUID: 0})
    task = task_for("NVIDIA GeForce RTX 4090", scale=1e-5)
    with cp.cuda.Device(0):
        c = cupy_prover.product(proof.new_seed(), NODE_ID, task)
        levels = [[bytes(d) for d in level.get()] for level in cupy_prover.tree(c, 0)]
        host = cp.asnumpy(c)
    assert levels == proof.merkle_levels(proof.chunk_leaves(host))


def test_a_challenge_asking_for_more_memory_than_any_gpu_has_is_refused():
    """A wrong or hostile collector cannot make the host allocate without bound (review finding)."""
    import pytest

    from exporters.prover import Task

    entry = {"gpu_uuid": UUID, "model": "NVIDIA H100 80GB HBM3", "n": 1 << 20, "k": 256, "budget_s": 3.8,
             "reference_tflops": 989.0}
    with pytest.raises(ValueError, match="larger than any GPU"):
        Task.from_dict(entry)
    with pytest.raises(ValueError, match="not whole chunks"):
        Task.from_dict(dict(entry, n=300))
    assert Task.from_dict(dict(entry, n=99_584, k=99_840)).n == 99_584
