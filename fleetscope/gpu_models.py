"""The reference table of GPU models (fleetscope/data/gpu_models.csv) and matching against it.

The table says what NVML reports for a genuine board of each model: memory,
SM count, architecture and, where known, the maximum SM clock; and what the
vendor's datasheet gives as its peak FP32 and dense tensor-core FP16
throughput, which sizes the proof of GPU (fleetscope/proof.py). Its header
cites the sources. ``lookup`` finds the row for a name as NVML reports it,
tolerant of the naming variants drivers and form factors use ("NVIDIA
A100-SXM4-80GB", "A100 80GB PCIe", "Tesla V100-SXM2-16GB", "NVIDIA GeForce
RTX 4090"). ``spec_problems`` says, for one identity, in which ways it
disagrees with its model's row: the evidence of a spec_mismatch finding.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).parent / "data" / "gpu_models.csv"
TABLE_VERSION = 2  # 2: datasheet throughput columns for the proof of GPU (issue 14)
MIB = 2**20
# NVML's memory.total is less than the nominal size: the driver reserves some
# (an 80 GB H100 reports 81,559 MiB of 81,920), and ECC on GDDR takes 1/16
# more (a 24 GB A10 reports 23,028 MiB, 93.7 %). A tenth below nominal covers
# both; a board claiming the next size down (40 of 80 GB) is far outside it.
MEMORY_LOW = 0.90
# Never more than nominal, but allow rounding in how a size is quoted.
MEMORY_HIGH = 1.01
# Max SM clocks differ between board partners' factory-overclocked cards and
# with the driver; a quarter either way is far looser than that spread and
# still catches a consumer card (RTX 4090: 3,120 MHz) claiming to be a data
# centre one (H100: 1,980 MHz).
CLOCK_TOLERANCE = 0.25
# Words that say nothing about which model a board is: vendor and product
# lines, form factors, memory technology and sizes. A name with any other word
# beyond a row's match words (Ti, SUPER, D, Laptop, Max-Q) is not that row.
IGNORED = frozenset({
    "nvidia", "geforce", "tesla", "graphics", "generation", "gpu",
    "sxm", "sxm2", "sxm3", "sxm4", "sxm5", "pcie", "hbm2", "hbm2e", "hbm3", "hbm3e", "nvl",
})
_MEMORY_WORD = re.compile(r"^\d+gb$")
_SPLIT = re.compile(r"[\s\-_/(),]+")


@dataclass(frozen=True)
class GpuModel:
    """One row of the reference table."""

    model: str
    match: tuple[frozenset[str], ...]
    memory_gib: int
    sm_count: int | None
    architecture: str
    max_sm_clock_mhz: int | None
    fp32_tflops: float
    # Dense tensor-core FP16 with FP32 accumulate: what sizes a proof (fleetscope/proof.py).
    fp16_tensor_tflops: float

    @property
    def memory_bytes(self) -> int:
        return self.memory_gib * 1024 * MIB


def tokens(name: str) -> list[str]:
    """The words of a reported model name, lower case, with "80 GB" joined into "80gb"."""
    words = [w for w in _SPLIT.split(name.lower()) if w]
    out: list[str] = []
    for w in words:
        if w == "gb" and out and out[-1].isdigit():
            out[-1] += "gb"
        else:
            out.append(w)
    return out


@cache
def models() -> tuple[GpuModel, ...]:
    """The reference table, read once."""
    with TABLE.open(newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return tuple(
            GpuModel(
                model=r["model"],
                match=tuple(frozenset(tokens(alt)) for alt in r["match"].split("|")),
                memory_gib=int(r["memory_gib"]),
                sm_count=int(r["sm_count"]) if r["sm_count"] else None,
                architecture=r["architecture"],
                max_sm_clock_mhz=int(r["max_sm_clock_mhz"]) if r["max_sm_clock_mhz"] else None,
                fp32_tflops=float(r["fp32_tflops"]),
                fp16_tensor_tflops=float(r["fp16_tensor_tflops"]),
            )
            for r in rows
        )


@cache
def lookup(name: str | None) -> GpuModel | None:
    """The reference row for a model name as NVML reports it, or None when no row fits.

    A row fits when the name holds every word of one of its match
    alternatives and no other word except IGNORED ones and memory sizes; of
    the rows that fit, the one with the longest alternative wins.
    """
    if not name:
        return None
    words = set(tokens(name))
    best: tuple[int, GpuModel] | None = None
    for row in models():
        for alt in row.match:
            if not alt <= words:
                continue
            rest = words - alt
            if any(w not in IGNORED and not _MEMORY_WORD.match(w) for w in rest):
                continue
            if best is None or len(alt) > best[0]:
                best = (len(alt), row)
    return best[1] if best else None


def spec_problems(row: GpuModel, *, memory_total_bytes: int | None, sm_count: int | None,
                  max_sm_clock_mhz: int | None) -> list[str]:
    """How a reported identity disagrees with its model's reference row; empty when it agrees.

    Only reported values are judged: an identity without an SM count (NVML
    NotSupported) is judged on what it has.
    """
    problems = []
    if memory_total_bytes is not None:
        low, high = row.memory_bytes * MEMORY_LOW, row.memory_bytes * MEMORY_HIGH
        if not low <= memory_total_bytes <= high:
            problems.append(f"memory {memory_total_bytes // MIB} MiB, expected {int(low) // MIB} to "
                            f"{int(high) // MIB} MiB for {row.memory_gib} GiB")
    if sm_count is not None and row.sm_count is not None and sm_count != row.sm_count:
        problems.append(f"{sm_count} SMs, expected {row.sm_count}")
    if max_sm_clock_mhz is not None and row.max_sm_clock_mhz is not None:
        ref = row.max_sm_clock_mhz
        if abs(max_sm_clock_mhz - ref) > CLOCK_TOLERANCE * ref:
            problems.append(f"max SM clock {max_sm_clock_mhz} MHz, expected {ref} MHz "
                            f"within {CLOCK_TOLERANCE:.0%}")
    return problems
