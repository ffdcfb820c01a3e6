"""The GPU model reference table matches NVML's naming variants and judges identities with a tolerance."""

from __future__ import annotations

import pytest

from exporters.sim import MODELS
from fleetscope.gpu_models import lookup, models, spec_problems

GIB = 2**30


@pytest.mark.parametrize(("reported", "row"), [
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"),
    ("A100 80GB PCIe", "NVIDIA A100 80GB PCIe"),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA A100-PCIE-40GB"),
    ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
    ("NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 4090 D"),
    ("Tesla V100-SXM2-16GB", "Tesla V100-SXM2-16GB"),
    ("Tesla V100-PCIE-32GB", "Tesla V100-PCIE-32GB"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA RTX 6000 Ada Generation", "NVIDIA RTX 6000 Ada Generation"),
    ("nvidia a10g", "NVIDIA A10G"),
])
def test_it_matches_the_naming_variants_nvml_uses(reported, row):
    assert lookup(reported).model == row


@pytest.mark.parametrize("reported", ["NVIDIA GeForce RTX 4070 Ti SUPER", "NVIDIA GeForce RTX 4090 Laptop GPU",
                                      "Quadro RTX 6000", "Apple M2 Pro", "", None])
def test_a_variant_it_does_not_know_is_unknown_rather_than_taken_for_a_near_model(reported):
    assert lookup(reported) is None


def test_every_row_matches_its_own_name():
    assert all(lookup(row.model) is row for row in models())


def test_memory_as_nvml_reports_it_is_within_the_tolerance_and_a_smaller_card_is_not():
    h100 = lookup("NVIDIA H100 80GB HBM3")
    assert spec_problems(h100, memory_total_bytes=81559 * 2**20, sm_count=132, max_sm_clock_mhz=1980) == []
    a10 = lookup("NVIDIA A10")  # ECC on GDDR6: 23,028 MiB of 24 GiB
    assert spec_problems(a10, memory_total_bytes=23028 * 2**20, sm_count=72, max_sm_clock_mhz=1695) == []
    problems = spec_problems(h100, memory_total_bytes=24564 * 2**20, sm_count=128, max_sm_clock_mhz=3120)
    assert len(problems) == 3


def test_the_simulated_models_agree_with_the_table():
    for m in MODELS.values():
        assert spec_problems(lookup(m.name), memory_total_bytes=m.memory_mib * 2**20, sm_count=m.sm_count,
                             max_sm_clock_mhz=m.max_sm_clock_mhz) == [], m.name
