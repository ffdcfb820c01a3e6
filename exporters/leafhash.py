"""The Merkle tree over C's chunks on the GPU: SHA-256(prefix || item), one CUDA thread per item.

The CuPy prover (exporters/prover.py) builds the whole tree where C is: C (up
to half of the GPU's memory: 40 GB on an H100) never crosses PCIe, nor do the
tree's levels (39 M leaves for an H100, far too many for hashlib); only the
root and the path nodes an opening needs do. One kernel does both kinds of
hash (``fleetscope.proof``'s RFC 6962 domain separation):

- leaves: prefix 0x00, items of CHUNK_ENTRIES words: C's bytes, row-major,
  are exactly its chunks end to end, so item i is C's chunk i;
- inner nodes: prefix 0x01, items of 16 words: a level of 32-byte digests is
  exactly its pairs (left || right) end to end, so item i is the parent of
  nodes 2i and 2i + 1. An odd last node is carried up unchanged by the
  caller (a copy), as ``fleetscope.proof.merkle_levels`` does.

``CORE`` is SHA-256 written as plain C: the CUDA qualifiers ``__device__`` and
``__constant__`` are its only CUDA. ``cuda_source()`` adds the kernel
(compiled by NVRTC through ``cupy.RawKernel``); ``host_source()`` defines the
qualifiers away and adds a loop over the items, so a C compiler builds the
same core and tests check it byte for byte against hashlib, and a tree built
level by level with it against ``fleetscope.proof.merkle_levels``
(tests/test_prover_leafhash.py), on machines with no GPU.

An item is read one 32-bit word at a time in memory order (little-endian
float32 for C, as committed, which is how a little-endian GPU stores them;
raw bytes for digests): with the prefix byte in front, message word j
(big-endian) is the last byte of item word j-1 (the prefix for j = 0) and the
first three bytes of item word j, so no byte-by-byte loads are needed.
"""

from __future__ import annotations

# Threads per block of the kernel: items are many (an H100's C has 39 M
# chunks), and small blocks spread the short last levels over every SM.
THREADS_PER_BLOCK = 128
KERNEL_NAME = "fleet_hashes"
HOST_FUNCTION = "fleet_hashes_host"
LEAF_PREFIX = 0x00
NODE_PREFIX = 0x01
DIGEST_WORDS = 8
NODE_WORDS = 2 * DIGEST_WORDS

CORE = r"""
/* SHA-256 (FIPS 180-4) of prefix || item, for items of whole 32-bit words. Plain C
   but for the __device__ / __constant__ qualifiers, which a host build
   defines away (exporters/leafhash.py). */

__constant__ unsigned int FLEET_SHA256_K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u
};

#define FLEET_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

/* Big-endian word j of the padded message prefix || item || 0x80 || 0... || bit length,
   for an item of `words` little-endian words (so `words * 4` bytes) and `total` words in all. */
__device__ unsigned int fleet_message_word(const unsigned int *item, long long words, unsigned int prefix,
                                           long long total, long long j) {
    if (j < words) {
        unsigned int cur = item[j];
        unsigned int last = j > 0 ? item[j - 1] >> 24 : prefix;
        return (last << 24) | ((cur & 0xffu) << 16) | (((cur >> 8) & 0xffu) << 8) | ((cur >> 16) & 0xffu);
    }
    if (j == words) {
        unsigned int last = words > 0 ? item[words - 1] >> 24 : prefix;
        return (last << 24) | 0x00800000u;  /* the item's last byte, then the 0x80 that ends the message */
    }
    unsigned long long bits = ((unsigned long long)words * 4u + 1u) * 8u;
    if (j == total - 2) return (unsigned int)(bits >> 32);
    if (j == total - 1) return (unsigned int)(bits & 0xffffffffu);
    return 0u;
}

/* out[0..31] = SHA-256(prefix || item), item being `words` 32-bit words and prefix one byte. */
__device__ void fleet_hash(const unsigned int *item, long long words, unsigned int prefix, unsigned char *out) {
    unsigned int h[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                         0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    long long length = words * 4 + 1;             /* bytes in the message */
    long long blocks = (length + 8) / 64 + 1;     /* with the 0x80 and the 64-bit length */
    long long total = blocks * 16;
    unsigned int w[16];
    for (long long b = 0; b < blocks; b++) {
        unsigned int a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
#pragma unroll
        for (int t = 0; t < 64; t++) {
            unsigned int wt;
            if (t < 16) {
                wt = fleet_message_word(item, words, prefix, total, b * 16 + t);
            } else {
                unsigned int w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
                unsigned int s0 = FLEET_ROTR(w15, 7) ^ FLEET_ROTR(w15, 18) ^ (w15 >> 3);
                unsigned int s1 = FLEET_ROTR(w2, 17) ^ FLEET_ROTR(w2, 19) ^ (w2 >> 10);
                wt = w[t & 15] + s0 + w[(t - 7) & 15] + s1;
            }
            w[t & 15] = wt;
            unsigned int S1 = FLEET_ROTR(e, 6) ^ FLEET_ROTR(e, 11) ^ FLEET_ROTR(e, 25);
            unsigned int ch = (e & f) ^ (~e & g);
            unsigned int t1 = hh + S1 + ch + FLEET_SHA256_K[t] + wt;
            unsigned int S0 = FLEET_ROTR(a, 2) ^ FLEET_ROTR(a, 13) ^ FLEET_ROTR(a, 22);
            unsigned int maj = (a & bb) ^ (a & c) ^ (bb & c);
            unsigned int t2 = S0 + maj;
            hh = g; g = f; f = e; e = d + t1; d = c; c = bb; bb = a; a = t1 + t2;
        }
        h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}
"""

_KERNEL = r"""
/* One thread per item (count items of `words` words, end to end):
   out[32 i .. 32 i + 31] = SHA-256(prefix || item i). */
extern "C" __global__ void fleet_hashes(const unsigned int *items, long long count, long long words,
                                        unsigned int prefix, unsigned char *out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) fleet_hash(items + i * words, words, prefix & 0xffu, out + 32 * i);
}
"""

_HOST = r"""
/* The same core on the CPU, for tests: every item in turn. */
void fleet_hashes_host(const unsigned int *items, long long count, long long words, unsigned int prefix,
                       unsigned char *out) {
    for (long long i = 0; i < count; i++) fleet_hash(items + i * words, words, prefix & 0xffu, out + 32 * i);
}
"""


def cuda_source() -> str:
    """The CUDA source of the kernel ``KERNEL_NAME`` (for ``cupy.RawKernel``)."""
    return CORE + _KERNEL


def host_source() -> str:
    """The same core as plain C for a host compiler, with ``HOST_FUNCTION`` looping over the items."""
    return "#define __device__\n#define __constant__ static const\n" + CORE + _HOST
