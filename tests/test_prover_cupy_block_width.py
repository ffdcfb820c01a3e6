"""The CuPy prover's blocks of the inner dimension are wide enough for its GEMMs to be compute-bound.

Each block's GEMM (beta = 1) reads and writes all of C, 8 bytes an entry, so a block of width w does w / 4
flops per byte of memory traffic. With a fixed 1 GiB block an H100's C (n = 99,584) got w = 256: 64 flop/byte,
214 TFLOPS at 3.35 TB/s, a fifth of its peak, and honest H100s were late. Checked on every model in the
reference table, with the memory left free beside C on a card of exactly the claimed size (no GPU needed).
"""

from __future__ import annotations

from exporters import prover
from fleetscope import gpu_models, proof

# Flops per byte of C traffic an H100 SXM needs at its peak: 989 TFLOPS / 3.35 TB/s = 295, with room to spare.
MIN_WIDTH = 4 * 512


def test_every_model_gets_blocks_wide_enough_to_be_compute_bound():
    for model in gpu_models.models():
        if not model.fp16_tensor_tflops:
            continue
        size = proof.size_for(model)
        free = model.memory_bytes - 4 * size.n * size.n - 2**30  # C, and a GiB for the framework
        width = prover.block_size(size.n, size.k, prover.cupy_block_bytes(free))
        assert width >= min(MIN_WIDTH, size.k), (model.model, size, width)
        a_and_b = 2 * size.n * width * prover.BYTES_PER_BLOCK_ENTRY
        assert a_and_b <= free, (model.model, a_and_b, free)
