"""The CUDA tree hasher's SHA-256 core, built with the host's C compiler, agrees with hashlib byte for byte.

Both of its hashes (leaves: 0x00 || chunk; inner nodes: 0x01 || left ||
right), and a tree built level by level with it, one call per level as the
CuPy prover launches the kernel, equals fleetscope.proof.merkle_levels.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess

import numpy as np
import pytest

from exporters import leafhash
from fleetscope import proof

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture(scope="module")
def host_hash(tmp_path_factory):
    """hash(items: uint32 array (count x words), prefix) -> [32-byte digest of prefix || item, ...]."""
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build the tree hasher's core")
    build = tmp_path_factory.mktemp("leafhash")
    source = build / "leafhash.c"
    source.write_text(leafhash.host_source())
    library = build / "leafhash.so"
    subprocess.run([CC, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True,
                   capture_output=True)
    lib = ctypes.CDLL(str(library))
    function = getattr(lib, leafhash.HOST_FUNCTION)
    function.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint, ctypes.c_void_p]
    function.restype = None

    def hash_items(items: np.ndarray, prefix: int) -> list[bytes]:
        items = np.ascontiguousarray(items, dtype="<u4")
        count, words = items.shape
        out = np.zeros(max(1, count) * 32, dtype=np.uint8)
        function(items.ctypes.data, count, words, prefix, out.ctypes.data)
        return [out[32 * i:32 * i + 32].tobytes() for i in range(count)]

    return hash_items


def host_levels(host_hash, leaves: list[bytes]) -> list[list[bytes]]:
    """The tree as the CuPy prover builds it: each level one call over the level's pairs, end to end, with
    the node prefix; an odd last node copied up unchanged."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = np.frombuffer(b"".join(levels[-1]), dtype="<u4")
        pairs = len(levels[-1]) // 2
        up = host_hash(below[:pairs * leafhash.NODE_WORDS].reshape(pairs, leafhash.NODE_WORDS), leafhash.NODE_PREFIX)
        if len(levels[-1]) % 2:
            up.append(levels[-1][-1])
        levels.append(up)
    return levels


# Item lengths in 32-bit words: empty, one, around the 55/56-byte padding
# boundary of one block (13 words + the prefix = 53 bytes, 14 = 57), whole
# blocks, an inner node's pair (16), and a chunk of C (256).
WORDS = [0, 1, 2, 13, 14, 15, 16, 17, 31, 32, 33, 63, 64, proof.CHUNK_ENTRIES, 1000]


@pytest.mark.parametrize("prefix", [leafhash.LEAF_PREFIX, leafhash.NODE_PREFIX])
@pytest.mark.parametrize("words", WORDS)
def test_the_c_core_hashes_items_exactly_as_hashlib_does(host_hash, words, prefix):
    rng = np.random.default_rng(words * 2 + prefix)
    # Random bit patterns, NaNs and infinities included: the hash sees bytes.
    items = rng.integers(0, 2**32, size=(7, words), dtype=np.uint32)
    assert host_hash(items, prefix) == [hashlib.sha256(bytes([prefix]) + item.astype("<u4").tobytes()).digest()
                                        for item in items]


def test_the_c_core_hashes_a_node_as_fleetscope_proof_does(host_hash):
    left, right = hashlib.sha256(b"left").digest(), hashlib.sha256(b"right").digest()
    pair = np.frombuffer(left + right, dtype="<u4").reshape(1, leafhash.NODE_WORDS)
    assert host_hash(pair, leafhash.NODE_PREFIX) == [proof._node(left, right)]


def test_the_c_core_hashes_a_real_product_into_the_numpy_provers_leaves(host_hash):
    key = proof.keys("ab" * 32, 7, "GPU-test")
    rows, cols = np.arange(256, dtype=np.uint32), np.arange(256, dtype=np.uint32)
    c = proof.a_block(key, rows, cols) @ proof.b_block(key, cols, rows)
    # C row-major is its chunks end to end: item i is chunk i.
    items = np.ascontiguousarray(c, dtype="<f4").view("<u4").reshape(proof.leaf_count(256), proof.CHUNK_ENTRIES)
    assert host_hash(items, leafhash.LEAF_PREFIX) == proof.chunk_leaves(c)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 33, 256, 1001])
def test_a_tree_built_level_by_level_with_the_c_core_is_merkle_levels(host_hash, count):
    rng = np.random.default_rng(count)
    leaves = [rng.bytes(32) for _ in range(count)]
    assert host_levels(host_hash, leaves) == proof.merkle_levels(leaves)


def test_the_cuda_source_holds_the_kernel_and_the_same_core():
    source = leafhash.cuda_source()
    assert leafhash.CORE in source
    assert f'extern "C" __global__ void {leafhash.KERNEL_NAME}(' in source
    assert leafhash.CORE in leafhash.host_source()
