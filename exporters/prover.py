"""Provers for the proof of GPU: C = A x B for each challenged GPU, a Merkle root over C's chunks, openings.

The protocol is docs/proof.md; its definitions (the matrices, the leaves, the
tree) are ``fleetscope.proof``, shared with the collector that judges. Every
prover has one interface:

- ``prove(seed, node_id, task) -> Committed``: compute one GPU's C and the
  tree over its chunks (``fleetscope.proof.chunk_leaves``);
  ``Committed.root`` is what the host commits.
- ``open(committed, rows, cols) -> [record]``: the chunks holding the named
  entries (``fleetscope.proof.checked_leaves``) with their Merkle paths, as
  ``fleetscope.proof.opening`` records, the open request's ``openings``.
- ``prove_all(seed, node_id, tasks, on_commit)``: every GPU of the host at
  once (one thread per GPU), calling ``on_commit`` with each ``Committed``
  as soon as its root is ready, so the first GPU's root is sent while the
  others still compute.

Backends:

- :class:`NumpyProver`: the CPU, float32. For the simulator and the tests;
  a real GPU's challenge is sized for its tensor cores and a CPU cannot meet
  that deadline.
- :class:`CupyProver` (``pip install 'fleetscope[cuda]'``): A and B generated
  on the GPU in blocks of the inner dimension, an FP16 x FP16 -> FP32
  tensor-core GEMM accumulating into C in place, and the whole tree hashed on
  the GPU (exporters/leafhash.py), so neither C nor the tree crosses PCIe.
- :class:`SimProver`: the NumPy prover at a simulated host's real speed, and
  the simulator's cheaters (exporters/sim.py, ``PROOF_PROFILES``).

A ``task`` is one GPU's entry of the collector's challenge:
``{"gpu_uuid", "model", "n", "k", "budget_s", "reference_tflops"}``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetscope import gpu_models, proof

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

# Working memory for one block of A and B (the inner dimension is cut into
# blocks so that A and B are never whole: an H100's A is 20 GB in FP16).
# NumPy: A block, B block and their uint32 intermediates, about 12 bytes per
# entry of each; 64 MiB keeps the simulator's many provers small.
NUMPY_BLOCK_BYTES = 64 * 2**20
# CuPy: at least 1 GiB beside C (at most half the claimed memory, fleetscope.proof.MEMORY_SHARE), and half of
# what is free once C is allocated. The width matters for speed: each block's GEMM reads and writes all of C
# (8 bytes an entry, beta = 1), so a block of width w does only w / 4 flops per byte of memory traffic. An
# H100's C (n = 99,584) in 1 GiB blocks gets w = 256: 64 flop/byte x 3.35 TB/s = 214 TFLOPS, 22 % of its
# 989 and late every round; half of its free 40 GB gives w = 8,192, compute-bound.
CUPY_BLOCK_BYTES = 2**30
CUPY_FREE_SHARE = 0.5
BYTES_PER_BLOCK_ENTRY = 12
# One NumPy GEMM at a time per process: OpenBLAS already spreads one GEMM
# over every core, and many threads (a simulator proving dozens of GPUs)
# calling it at once oversubscribe the cores with spinning BLAS threads.
_GEMM_LOCK = threading.Lock()
# A simulated GPU proves at this share of its model's datasheet peak, within
# what large cuBLAS GEMMs reach (0.65-0.95, fleetscope.proof.MIN_EFFICIENCY).
# 0.8 left too little margin in the demo, where a hundred simulated hosts'
# threads share two cores with the collector at start-up: some honest ones
# came in 0.05-0.4 s late in the first round. One GPU proving for two is
# still late (2 x 2.2 s against a 3.8 s deadline).
SIM_EFFICIENCY = 0.9
# What a proof_slow host really has: a T4 (65 TFLOPS) claiming, by default, an A100 (312).
PROOF_SLOW_HARDWARE = "Tesla T4"
# The largest C any challenge can ask for: MEMORY_SHARE of the largest memory
# in the reference table (an H200's 141 GB), with room to spare.
MAX_C_BYTES = 128 * 2**30
CUPY_MISSING = ("CuPy is not installed or finds no CUDA device; install the CUDA extra "
                "(pip install 'fleetscope[cuda]', CuPy for CUDA 12) to prove NVIDIA GPUs")


@dataclass(frozen=True)
class Task:
    """One GPU's challenge: the work (n, k) and its claimed model's reference."""

    gpu_uuid: str
    model: str
    n: int
    k: int
    budget_s: float
    reference_tflops: float

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> Task:
        """A task from one entry of the challenge's ``gpus``; ValueError when it is malformed."""
        try:
            task = cls(gpu_uuid=str(entry["gpu_uuid"]), model=str(entry.get("model") or ""),
                       n=int(entry["n"]), k=int(entry["k"]), budget_s=float(entry["budget_s"]),
                       reference_tflops=float(entry.get("reference_tflops") or 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed challenge entry {entry!r}: {exc}") from None
        if task.n < 1 or task.k < 1:
            raise ValueError(f"malformed challenge entry {entry!r}: n and k must be positive")
        if task.n % proof.CHUNK_ENTRIES or task.n * task.n * 4 > MAX_C_BYTES:
            # A wrong or hostile collector must not make the host allocate without bound.
            raise ValueError(f"challenge entry {entry!r}: C of n = {task.n} is not whole chunks or is larger "
                             f"than any GPU's memory share ({MAX_C_BYTES // 2**30} GiB)")
        if not task.reference_tflops and task.budget_s > proof.OVERHEAD_S:
            # An entry without it: the budget is work / (reference x MIN_EFFICIENCY) + OVERHEAD_S.
            ref = task.flops / ((task.budget_s - proof.OVERHEAD_S) * proof.MIN_EFFICIENCY) / 1e12
            task = dataclasses.replace(task, reference_tflops=ref)
        return task

    @property
    def size(self) -> proof.Size:
        return proof.Size(n=self.n, k=self.k, reference_tflops=self.reference_tflops, budget_s=self.budget_s)

    @property
    def flops(self) -> float:
        return self.size.flops

    def scale(self) -> float:
        """The round's scale: reference over the claimed model's datasheet peak (1 in production)."""
        model = gpu_models.lookup(self.model)
        if model is None or not self.reference_tflops:
            return 1.0
        return self.reference_tflops / model.fp16_tensor_tflops


@dataclass
class Committed:
    """One GPU's proof, committed: the root, the tree, and C to open later."""

    task: Task
    root: bytes
    levels: Any                # the tree, leaves first: lists of digests, or (CuPy) one device array per level
    c: Any                     # C (n x n float32): a NumPy or CuPy array
    compute_s: float           # from the start of prove() to the root
    backend: str = ""

    def release(self) -> None:
        """Drop C and the tree (on a GPU, their memory) once the openings are sent."""
        self.c = None
        self.levels = None


def block_size(n: int, k: int, budget_bytes: int) -> int:
    """Columns of A (rows of B) per block: a multiple of SIZE_STEP within ``budget_bytes``, at most k."""
    fit = budget_bytes // max(1, 2 * n * BYTES_PER_BLOCK_ENTRY)
    return max(proof.SIZE_STEP, min(k, fit // proof.SIZE_STEP * proof.SIZE_STEP))


def cupy_block_bytes(free_bytes: int) -> int:
    """The CuPy prover's working memory for a block of A and B, given the device's free bytes with C allocated."""
    return max(CUPY_BLOCK_BYTES, int(free_bytes * CUPY_FREE_SHARE))


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root and the levels of the tree over ``leaves``."""
    levels = proof.merkle_levels(leaves)
    return levels[-1][0], levels


class Prover:
    """The interface, and ``prove_all``'s one thread per GPU."""

    backend = "none"
    # A prover that never asks for its seed (the simulator's proof_silent).
    silent = False

    def prove(self, seed: str, node_id: int, task: Task) -> Committed:
        raise NotImplementedError

    def open(self, committed: Committed, rows: Sequence[int], cols: Sequence[int]) -> list[dict[str, Any]]:
        """The opening records of the chunks holding C[rows][:, cols] (the open request's ``openings``)."""
        n = committed.task.n
        for name, indices in (("row", rows), ("column", cols)):
            for i in indices:
                if not 0 <= int(i) < n:
                    raise ValueError(f"{name} {int(i)} is outside C ({n} x {n})")
        return [proof.opening(leaf, self.chunk(committed, leaf), self.path(committed, leaf))
                for leaf in proof.checked_leaves(n, [int(i) for i in rows], [int(j) for j in cols])]

    def chunk(self, committed: Committed, leaf: int) -> bytes:
        """Leaf ``leaf``'s chunk of C: CHUNK_ENTRIES entries, little-endian float32."""
        start = leaf * proof.CHUNK_ENTRIES
        flat = committed.c.reshape(-1)
        return np.ascontiguousarray(flat[start:start + proof.CHUNK_ENTRIES], dtype="<f4").tobytes()

    def path(self, committed: Committed, leaf: int) -> list[bytes]:
        """Leaf ``leaf``'s Merkle path, from the tree's levels."""
        return proof.merkle_path(committed.levels, leaf)

    def can_prove(self, task: Task) -> bool:
        """Whether this host has the GPU ``task`` names."""
        return True

    def prove_one(self, seed: str, node_id: int, task: Task, on_commit: Callable[[Committed], None],
                  on_error: Callable[[Task, BaseException], None] | None = None) -> None:
        """Prove ``task`` and hand on its commitment; a failure is reported for this GPU, the others go on."""
        try:
            committed = self.prove(seed, node_id, task)
        except BaseException as exc:  # noqa: BLE001 - reported per GPU; the others go on
            if on_error is None:
                log.exception("proving %s failed", task.gpu_uuid)
            else:
                on_error(task, exc)
            return
        on_commit(committed)

    def prove_all(self, seed: str, node_id: int, tasks: Sequence[Task],
                  on_commit: Callable[[Committed], None],
                  on_error: Callable[[Task, BaseException], None] | None = None) -> None:
        """Prove every task at once, one thread each; ``on_commit`` runs in the task's thread as it finishes."""
        threads = [threading.Thread(target=self.prove_one, args=(seed, node_id, task, on_commit, on_error),
                                    name=f"fleetscope-prove-{i}", daemon=True)
                   for i, task in enumerate(tasks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


# -- NumPy ----------------------------------------------------------------------------


class NumpyProver(Prover):
    """C = A x B in float32 on the CPU, A and B generated block by block of the inner dimension."""

    backend = "numpy"

    def __init__(self, *, block_bytes: int = NUMPY_BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes

    def product(self, seed: str, node_id: int, task: Task) -> np.ndarray:
        """C (n x n, float32)."""
        key = proof.keys(seed, node_id, task.gpu_uuid)
        n, k = task.n, task.k
        rows = np.arange(n, dtype=np.uint32)
        c = np.zeros((n, n), dtype=np.float32)
        step = block_size(n, k, self.block_bytes)
        for start in range(0, k, step):
            inner = np.arange(start, min(k, start + step), dtype=np.uint32)
            a = proof.a_block(key, rows, inner)
            b = proof.b_block(key, inner, rows)
            with _GEMM_LOCK:
                c += a @ b
        return c

    def prove(self, seed: str, node_id: int, task: Task) -> Committed:
        started = time.monotonic()
        c = self.product(seed, node_id, task)
        return self.commit(task, c, started)

    def commit(self, task: Task, c: np.ndarray, started: float) -> Committed:
        """The tree over ``c``'s chunks."""
        c = np.ascontiguousarray(c, dtype="<f4")
        root, levels = tree(proof.chunk_leaves(c))
        return Committed(task, root, levels, c, time.monotonic() - started, self.backend)


# -- CuPy -----------------------------------------------------------------------------


def import_cupy() -> Any:
    """CuPy, once it has found a CUDA device; RuntimeError (saying what to install) otherwise."""
    # NVML numbers GPUs in PCI bus order; make CUDA do the same, so that an
    # exporter without CUDA UUIDs (old CuPy) still maps NVML index -> device.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    try:
        import cupy
    except ImportError as exc:
        raise RuntimeError(f"{CUPY_MISSING} ({exc})") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy raises CUDARuntimeError without a driver
        raise RuntimeError(f"{CUPY_MISSING} ({exc})") from None
    if count < 1:
        raise RuntimeError(f"{CUPY_MISSING} (no CUDA device)")
    return cupy


def cupy_available() -> bool:
    try:
        import_cupy()
    except RuntimeError:
        return False
    return True


def _cuda_uuid(raw: Any) -> str | None:
    """NVML's spelling ("GPU-xxxxxxxx-xxxx-...") of cudaDeviceProp.uuid (16 bytes)."""
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < 16:
        return None
    h = bytes(raw[:16]).hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class CupyProver(Prover):
    """C = A x B on NVIDIA GPUs: FP16 inputs on the tensor cores, FP32 accumulation into C, the tree on the GPU.

    ``devices()`` maps each GPU UUID to its NVML index (the exporter's
    source: exporters/nvml.py); the CUDA device is found by its own UUID
    where CUDA reports one, else taken to be the NVML index (CUDA_DEVICE_ORDER
    is set to PCI_BUS_ID, NVML's order).
    """

    backend = "cupy"

    def __init__(self, devices: Callable[[], Mapping[str, int]], *, block_bytes: int | None = None) -> None:
        self._cupy = import_cupy()
        self._nvml_devices = devices
        self.block_bytes = block_bytes  # None: cupy_block_bytes of the free memory once C is allocated
        self._kernels: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._cuda_uuids: dict[str, int] = {}
        runtime = self._cupy.cuda.runtime
        for i in range(runtime.getDeviceCount()):
            try:
                uuid = _cuda_uuid(runtime.getDeviceProperties(i).get("uuid"))
            except Exception:  # noqa: BLE001 - an old CuPy without the field: fall back to the index
                uuid = None
            if uuid:
                self._cuda_uuids[uuid.lower()] = i

    def device_for(self, gpu_uuid: str) -> int | None:
        """The CUDA device of ``gpu_uuid``, or None when this host has no such GPU."""
        device = self._cuda_uuids.get(gpu_uuid.lower())
        if device is not None:
            return device
        if self._cuda_uuids:  # CUDA told us every UUID, and this is not one
            return None
        return self._nvml_devices().get(gpu_uuid)

    def can_prove(self, task: Task) -> bool:
        return self.device_for(task.gpu_uuid) is not None

    def _kernel(self, device: int) -> Any:
        from exporters import leafhash

        with self._lock:
            kernel = self._kernels.get(device)
            if kernel is None:
                kernel = self._cupy.RawKernel(leafhash.cuda_source(), leafhash.KERNEL_NAME)
                self._kernels[device] = kernel
            return kernel

    def prove(self, seed: str, node_id: int, task: Task) -> Committed:
        device = self.device_for(task.gpu_uuid)
        if device is None:
            raise RuntimeError(f"no CUDA device for {task.gpu_uuid}")
        cp = self._cupy
        with cp.cuda.Device(device):
            started = time.monotonic()
            c = self.product(seed, node_id, task)
            levels = self.tree(c, device)
            root = levels[-1][0].get().tobytes()
            return Committed(task, root, levels, c, time.monotonic() - started, self.backend)

    def product(self, seed: str, node_id: int, task: Task) -> Any:
        """C (n x n, float32) on the current device: C += A_block x B_block over blocks of k.

        CuPy's own ``cupy.matmul`` on float16 arrays gives a float16 C (it
        calls cublasGemmEx with the output type of its inputs and
        CUBLAS_COMPUTE_32F: ``tensordot_core_v11`` in
        cupy/_core/_routines_linalg.pyx), and CUPY_TF32 only affects float32
        inputs. So cuBLAS is called directly through CuPy's binding,
        ``cupy_backends.cuda.libs.cublas.gemmEx(handle, transa, transb, m, n,
        k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc,
        computeType, algo)``: A and B CUDA_R_16F, C CUDA_R_32F,
        CUBLAS_COMPUTE_32F on the tensor cores (CUBLAS_GEMM_DEFAULT_TENSOR_OP),
        and beta = 1, so each block accumulates into C in place. cuBLAS is
        column-major: a row-major C = A x B is the column-major C^T = B^T x
        A^T, so B goes first.
        """
        cp = self._cupy
        from cupy_backends.cuda.libs import cublas

        key = proof.keys(seed, node_id, task.gpu_uuid)
        n, k = task.n, task.k
        rows = cp.arange(n, dtype=cp.uint32)
        c = cp.zeros((n, n), dtype=cp.float32)
        one = np.array(1.0, dtype=np.float32)  # alpha and beta, read from host memory
        handle = cp.cuda.device.get_cublas_handle()
        block_bytes = self.block_bytes
        if block_bytes is None:
            free = cp.cuda.runtime.memGetInfo()[0] + cp.get_default_memory_pool().free_bytes()
            block_bytes = cupy_block_bytes(free)
        step = block_size(n, k, block_bytes)
        for start in range(0, k, step):
            width = min(k, start + step) - start
            inner = cp.arange(start, start + width, dtype=cp.uint32)
            a = proof.a_block(key, rows, inner, dtype=cp.float16, xp=cp)   # n x width, exact in FP16
            b = proof.b_block(key, inner, rows, dtype=cp.float16, xp=cp)   # width x n
            cublas.gemmEx(handle, cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_N, n, n, width,
                          one.ctypes.data, b.data.ptr, cp.cuda.runtime.CUDA_R_16F, n,
                          a.data.ptr, cp.cuda.runtime.CUDA_R_16F, width,
                          one.ctypes.data, c.data.ptr, cp.cuda.runtime.CUDA_R_32F, n,
                          cublas.CUBLAS_COMPUTE_32F, cublas.CUBLAS_GEMM_DEFAULT_TENSOR_OP)
            del a, b
        return c

    def tree(self, c: Any, device: int) -> list[Any]:
        """The Merkle tree over ``c``'s chunks on the GPU: one (count x 32) uint8 array per level, leaves first.

        One kernel launch per level (exporters/leafhash.py): the leaves over
        C's chunks (C row-major is exactly its chunks end to end), then each
        level's pairs (a level of digests is exactly its pairs end to end); an
        odd last node is copied up unchanged, as fleetscope.proof.merkle_levels
        does. Nothing leaves the GPU.
        """
        from exporters import leafhash

        cp = self._cupy
        kernel = self._kernel(device)
        count = c.size // proof.CHUNK_ENTRIES
        level = cp.empty((count, 32), dtype=cp.uint8)
        self._hash(kernel, c, count, proof.CHUNK_ENTRIES, leafhash.LEAF_PREFIX, level)
        levels = [level]
        while levels[-1].shape[0] > 1:
            below = levels[-1]
            width, pairs = below.shape[0], below.shape[0] // 2
            up = cp.empty(((width + 1) // 2, 32), dtype=cp.uint8)
            self._hash(kernel, below, pairs, leafhash.NODE_WORDS, leafhash.NODE_PREFIX, up)
            if width % 2:
                up[pairs] = below[width - 1]
            levels.append(up)
        return levels

    def _hash(self, kernel: Any, items: Any, count: int, words: int, prefix: int, out: Any) -> None:
        from exporters import leafhash

        cp = self._cupy
        blocks = (count + leafhash.THREADS_PER_BLOCK - 1) // leafhash.THREADS_PER_BLOCK
        kernel((blocks,), (leafhash.THREADS_PER_BLOCK,),
               (items, cp.int64(count), cp.int64(words), cp.uint32(prefix), out))

    def chunk(self, committed: Committed, leaf: int) -> bytes:
        cp = self._cupy
        start = leaf * proof.CHUNK_ENTRIES
        with cp.cuda.Device(self.device_for(committed.task.gpu_uuid)):
            return np.ascontiguousarray(cp.asnumpy(committed.c.reshape(-1)[start:start + proof.CHUNK_ENTRIES]),
                                        dtype="<f4").tobytes()

    def path(self, committed: Committed, leaf: int) -> list[bytes]:
        """The path's nodes, copied from the GPU one by one (at most ~27 x 32 bytes)."""
        cp = self._cupy
        path = []
        with cp.cuda.Device(self.device_for(committed.task.gpu_uuid)):
            index = leaf
            for level in committed.levels[:-1]:
                sibling = index ^ 1
                if sibling < level.shape[0]:
                    path.append(level[sibling].get().tobytes())
                index //= 2
        return path


# -- the simulator ------------------------------------------------------------------------


class SimProver(NumpyProver):
    """A simulated host's prover: NumPy, at the speed of the GPU it really has, honest or cheating.

    After computing, it waits until work / (the true model's FP16 peak x the
    round's scale x SIM_EFFICIENCY) has passed since it started, so a
    simulated A100 commits when a real one would. ``true_model`` None: the
    claimed model (an honest host). ``cheat``:

    - ``garbage``: commits a random C at an honest speed (wrong result);
    - ``one_for_many``: one GPU proves every claimed one, one after the other
      (the later ones are late);
    - ``silent``: never asks for its seed (no answer).
    """

    backend = "sim"
    CHEATS = ("garbage", "one_for_many", "silent")

    def __init__(self, *, true_model: str | None = None, cheat: str | None = None, seed: int = 0,
                 efficiency: float = SIM_EFFICIENCY, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if cheat is not None and cheat not in self.CHEATS:
            raise ValueError(f"unknown cheat {cheat!r}; known: {', '.join(self.CHEATS)}")
        if true_model is not None and gpu_models.lookup(true_model) is None:
            raise ValueError(f"{true_model!r} is not in the GPU model table")
        self.true_model = true_model
        self.cheat = cheat
        self.silent = cheat == "silent"
        self.efficiency = efficiency
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        self._sleep = sleep
        self._clock = clock

    def emulated_s(self, task: Task) -> float:
        """Seconds the simulated GPU takes for ``task``."""
        model = gpu_models.lookup(self.true_model or task.model)
        claimed = gpu_models.lookup(task.model)
        if model is None or claimed is None:  # no reference: as fast as the claim allows
            tflops = task.reference_tflops or 1.0
        else:
            tflops = model.fp16_tensor_tflops * task.scale()
        return task.flops / (tflops * 1e12 * self.efficiency)

    def prove(self, seed: str, node_id: int, task: Task) -> Committed:
        started = self._clock()
        if self.cheat == "garbage":
            with self._rng_lock:
                c = self._rng.uniform(-1.0, 1.0, size=(task.n, task.n)).astype(np.float32)
        else:
            c = self.product(seed, node_id, task)
        committed = self.commit(task, c, started)
        self._sleep(max(0.0, started + self.emulated_s(task) - self._clock()))
        committed.compute_s = self._clock() - started
        return committed

    def prove_all(self, seed: str, node_id: int, tasks: Sequence[Task],
                  on_commit: Callable[[Committed], None],
                  on_error: Callable[[Task, BaseException], None] | None = None) -> None:
        if self.cheat != "one_for_many":
            super().prove_all(seed, node_id, tasks, on_commit, on_error)
            return
        for task in tasks:  # one real GPU: each claimed GPU's proof waits for the one before
            self.prove_one(seed, node_id, task, on_commit, on_error)


def make_prover(kind: str, *, devices: Callable[[], Mapping[str, int]] | None = None) -> Prover:
    """``numpy`` or ``cupy`` (RuntimeError saying what to install when CuPy cannot run)."""
    if kind == "numpy":
        return NumpyProver()
    if kind == "cupy":
        return CupyProver(devices or (lambda: {}))
    raise ValueError(f"unknown prover {kind!r}")
