"""The CUDA leaf hasher's SHA-256 core, built with the host's C compiler, agrees with hashlib byte for byte."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from exporters import leafhash
from fleetscope import proof

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture(scope="module")
def host_hasher(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build the leaf hasher's core")
    build = tmp_path_factory.mktemp("leafhash")
    source = build / "leafhash.c"
    source.write_text(leafhash.host_source())
    library = build / "leafhash.so"
    subprocess.run([CC, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True,
                   capture_output=True)
    lib = ctypes.CDLL(str(library))
    function = getattr(lib, leafhash.HOST_FUNCTION)
    function.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_void_p]
    function.restype = None

    def leaves(c: np.ndarray) -> list[bytes]:
        c = np.ascontiguousarray(c, dtype="<f4")
        out = np.zeros(c.shape[0] * 32, dtype=np.uint8)
        function(c.ctypes.data, c.shape[0], c.shape[1], out.ctypes.data)
        return [out[32 * i:32 * i + 32].tobytes() for i in range(c.shape[0])]

    return leaves


# Row lengths in float32 words: empty, one, around the 55/56-byte padding
# boundary of one block (13 words + the 0x00 = 53 bytes, 14 = 57), whole
# blocks, and the rows of a small proof.
WORDS = [0, 1, 2, 13, 14, 15, 16, 17, 31, 32, 33, 63, 64, 640, 1000]


@pytest.mark.parametrize("words", WORDS)
def test_the_c_core_hashes_rows_exactly_as_hashlib_does(host_hasher, words):
    rng = np.random.default_rng(words)
    # Random bit patterns, NaNs and infinities included: the hash sees bytes.
    c = rng.integers(0, 2**32, size=(7, words), dtype=np.uint32).view("<f4")
    assert host_hasher(c) == [proof.leaf_hash(proof.row_bytes(row)) for row in c]


def test_the_c_core_hashes_a_real_product_as_the_numpy_prover_commits_it(host_hasher):
    key = proof.keys("ab" * 32, 7, "GPU-test")
    rows, cols = np.arange(64, dtype=np.uint32), np.arange(128, dtype=np.uint32)
    c = proof.a_block(key, rows, cols) @ proof.b_block(key, cols, rows)
    leaves = host_hasher(c)
    assert proof.merkle_root(leaves) == proof.merkle_root([proof.leaf_hash(proof.row_bytes(r)) for r in c])


def test_the_cuda_source_holds_the_kernel_and_the_same_core():
    source = leafhash.cuda_source()
    assert leafhash.CORE in source
    assert f'extern "C" __global__ void {leafhash.KERNEL_NAME}(' in source
    assert leafhash.CORE in leafhash.host_source()
