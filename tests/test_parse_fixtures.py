"""Recorded payloads of the three producers parse to exact rows and identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.parse import GpuIdentity, GpuSample, PayloadParser, SeriesCache, parse_reference

PAYLOADS = Path(__file__).parent / "fixtures" / "payloads"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT = "text/plain; version=0.0.4; charset=utf-8"

A100_UUIDS = [
    "GPU-d2eac902-2c5d-ace1-f3c9-0b6600e03d2c", "GPU-ac103525-cbf2-b108-fc27-e0a32346cc13",
    "GPU-9b27dbdf-7714-7d56-f126-c28029a6f2e7", "GPU-703598ae-6caf-c6cc-d670-3f0c918c40bf",
    "GPU-13678d7a-cc9c-b987-0044-8fcc9561a0d1", "GPU-e2f79553-0eca-f147-2441-73f8a36958b5",
    "GPU-4a9f2968-e101-06f1-c1af-ff72ca8fbe35", "GPU-fb8adf9e-b459-8afe-e816-5a3cf9da0bf3",
]
A100_BUSES = ["07", "0F", "47", "4E", "87", "90", "B7", "BD"]
# util, mem_copy_util, fb_used, fb_free, power, energy, temp, sm, mem, pcie_replay, xid
A100_VALUES = [
    (0, 0, 0, 81283, 55.798, 311443765025, 45, 210, 1593, 0, 0),
    (0, 0, 0, 81283, 63.163, 898562149092, 64, 210, 1593, 0, 0),
    (95, 21, 61440, 19843, 281.719, 664818345288, 45, 1410, 1593, 0, 0),
    (100, 45, 76888, 4395, 390.237, 886918864396, 30, 1410, 1593, 0, 0),
    (0, 0, 0, 81283, 57.306, 244168568478, 56, 210, 1593, 0, 0),
    (90, 58, 72738, 8545, 339.425, 842579011348, 60, 1410, 1593, 0, 0),
    (0, 0, 0, 81283, 60.074, 861002682990, 35, 210, 1593, 3, 79),
    (0, 0, 0, 81283, 64.581, 640808309244, 31, 210, 1593, 0, 0),
]

RTX4090_UUIDS = [
    "GPU-86e0fbc8-6b44-0e94-f849-dfeb083826c6", "GPU-52f6f46f-9c10-aac3-60d4-d5b77628de31",
    "GPU-83562193-673a-a79d-fdda-e048f002c6d7", "GPU-644a72a2-1251-89bf-1220-3c9c8f463f2d",
    "GPU-6ae475e1-e01d-9492-fd18-2cbbec971de1", "GPU-9e5fdd4a-ff76-58be-f2ba-125a1b11eedc",
    "GPU-aee59483-c30d-fc08-099d-39351c0680f5", "GPU-aa1e9318-5ddb-e3b6-6631-2db7396c0b69",
]
RTX4090_BUSES = ["01", "21", "41", "61", "81", "A1", "C1", "E1"]
RTX4090_LOST = 5
RTX4090_VALUES = [  # same columns as A100_VALUES; GPU 5 is lost and reports nothing
    (97, 41, 22010, 2066, 431.27, 1838213000, 71, 2730, 10501, 0, 0),
    (0, 0, 1, 24075, 21.5, 95021000, 34, 210, 405, 0, 0),
    (100, 60, 23500, 576, 449.88, 2011520000, 76, 2745, 10501, 0, 0),
    (12, 2, 4120, 19956, 96.04, 420114000, 48, 2520, 10501, 0, 0),
    (0, 0, 1, 24075, 19.75, 88212000, 31, 210, 405, 0, 0),
    None,
    (55, 18, 9800, 14276, 301.6, 1200300500, 63, 2610, 10501, 0, 13),
    (3, 0, 600, 23476, 33.1, 150000000, 40, 1005, 810, 0, 0),
]

RTX3090_UUIDS = [  # nvidia_gpu_exporter strips "GPU-"; the parser puts it back
    "6942d6c8-25e8-daa5-65ac-9284c2a866ab", "88e358df-ca0c-2364-62de-0889bc25255b",
    "e43e6dac-3c68-541b-a913-d3f114508ffe", "2b0efac9-626f-58b7-43da-1bd3ec350e80",
    "865a0665-14b1-eb9d-a1e8-65cf1383a004", "ce200664-ed22-401c-3758-e1fa7cde19fe",
    "ad844e80-c21a-1fc4-b926-5223d640afcb", "0b449680-8276-f454-ed7d-68bda4e03bc1",
]
RTX3090_BUSES = ["01", "02", "41", "42", "81", "82", "C1", "C2"]
# util %, mem util %, used MiB, free MiB, power W, temp C, sm MHz, mem MHz
RTX3090_VALUES = [
    (100, 23, 20562, 3757, 345.39, 69, 1935, 9751),
    (97, 30, 18879, 5440, 337.41, 71, 1935, 9751),
    (0, 0, 3, 24316, 22.15, 32, 210, 405),
    (84, 66, 22184, 2135, 300.94, 66, 1935, 9751),
    (81, 37, 21998, 2321, 341.1, 69, 1935, 9751),
    (0, 0, 3, 24316, 29.67, 36, 210, 405),
    (86, 31, 19319, 5000, 302.13, 64, 1935, 9751),
    (100, 52, 19839, 4480, 338.53, 70, 1935, 9751),
]


def _dcgm_row(uuid, index, values, *, lost=False):
    if values is None:
        return GpuSample(uuid, index, *([None] * 13), lost)
    util, copy, used, free, power, energy, temp, sm, mem, replay, xid = values
    return GpuSample(uuid, index, float(util), float(copy), float(used), float(free),
                     power, float(energy), float(temp), float(sm), float(mem),
                     replay, None, None, xid, lost)


def expected_a100():
    samples = [_dcgm_row(u, i, v) for i, (u, v) in enumerate(zip(A100_UUIDS, A100_VALUES))]
    identities = [
        GpuIdentity(u, "NVIDIA A100-SXM4-80GB", None, f"00000000:{bus}:00.0", None, None,
                    None, None, None, None, None, None, None, "535.161.08", None)
        for u, bus in zip(A100_UUIDS, A100_BUSES)
    ]
    return samples, identities


def expected_rtx4090():
    samples = [_dcgm_row(u, i, v, lost=i == RTX4090_LOST)
               for i, (u, v) in enumerate(zip(RTX4090_UUIDS, RTX4090_VALUES))]
    identities = [
        GpuIdentity(
            u, "NVIDIA GeForce RTX 4090", "1652922015723" if i == 0 else None,
            f"00000000:{bus}:00.0", "0x268410DE", "0x16F010DE" if i < 4 else "0x88E51043",
            "900-1G136-2530-000" if i < 4 else None, "Ada",
            "passthrough" if i == 7 else "none", 25757220864, 128, 3120.0, 10501.0,
            "550.127.05", "95.02.18.80.87")
        for i, (u, bus) in enumerate(zip(RTX4090_UUIDS, RTX4090_BUSES))
    ]
    # Rows come in order of first appearance: the lost GPU is only in the
    # info and lost families at the end of the payload.
    order = [i for i in range(8) if i != RTX4090_LOST] + [RTX4090_LOST]
    return [samples[i] for i in order], [identities[i] for i in order]


def expected_rtx3090():
    samples = [
        GpuSample("GPU-" + u, i, float(util), float(copy), float(used), float(free), power,
                  None, float(temp), float(sm), float(mem), None, 0, 0, None, False)
        for i, (u, (util, copy, used, free, power, temp, sm, mem))
        in enumerate(zip(RTX3090_UUIDS, RTX3090_VALUES))
    ]
    identities = [
        GpuIdentity("GPU-" + u, "NVIDIA GeForce RTX 3090", None, f"00000000:{bus}:00.0",
                    "0x220410DE", "0x147D10DE" if i < 4 else "0x38801462", None, "Ampere",
                    None, 24576 * 1048576, None, 2100.0, 9751.0, "550.90.07",
                    "94.02.42.00.A9" if i < 4 else "94.02.42.00.E2")
        for i, (u, bus) in enumerate(zip(RTX3090_UUIDS, RTX3090_BUSES))
    ]
    return samples, identities


H100_UUID = "GPU-15e418ad-0d6e-8415-439b-a98989dac569"


def expected_h100_real():
    """The one payload taken from real hardware: an H100 under a bf16 matrix-product load."""
    samples = [GpuSample(H100_UUID, 0, 99.0, 32.0, 1362.0, 80196.0, 694.266, 6014341.0, 56.0, 1350.0, 2619.0,
                         0, 0, 0, 0, False)]
    identities = [GpuIdentity(H100_UUID, "NVIDIA H100 80GB HBM3", "1793626042028", "00000000:00:06.0",
                              "0x233010DE", "0x16C110DE", "692-2G520-0200-502", "hopper", "passthrough",
                              85520809984, 132, 1980.0, 2619.0, "580.159.04", "96.00.DA.00.0C")]
    return samples, identities


CASES = [
    # file, content type, expected, series, exporter_ok, lost
    ("dcgm_exporter_12fields_a100x8.prom", TEXT, expected_a100, 96, None, set()),
    ("dcgm_exporter_default_a100x8.prom", TEXT, expected_a100, 168, None, set()),
    ("dcgm_exporter_dcp_a100x8.prom", TEXT, expected_a100, 216, None, set()),
    ("fleet_exporter_rtx4090x8.prom", TEXT, expected_rtx4090, 88, True, {RTX4090_UUIDS[RTX4090_LOST]}),
    ("fleet_exporter_rtx4090x8.openmetrics", OPENMETRICS, expected_rtx4090, 88, True,
     {RTX4090_UUIDS[RTX4090_LOST]}),
    ("nvidia_gpu_exporter_rtx3090x8.prom", TEXT, expected_rtx3090, 243, True, set()),
    ("fleet_exporter_h100x1_real.prom", TEXT, expected_h100_real, 18, True, set()),
]


@pytest.mark.parametrize(("name", "content_type", "expected", "series", "exporter_ok", "lost"),
                         CASES, ids=[c[0] for c in CASES])
def test_each_producers_payload_parses_to_the_exact_rows_and_identities(
        name, content_type, expected, series, exporter_ok, lost):
    body = (PAYLOADS / name).read_bytes()
    samples, identities = expected()
    parser = PayloadParser()
    cache = SeriesCache()
    results = [parser.parse(body, content_type=content_type, cache=cache) for _ in range(3)]
    results.append(parse_reference(body, content_type=content_type))
    assert [r.path for r in results] == ["cold", "warm", "warm", "reference"]
    for result in results:
        assert result.samples == samples
        assert result.identities == identities
        assert result.series == series
        assert result.exporter_ok is exporter_ok
        assert result.lost == lost
        assert result.rejects == {}


def test_openmetrics_is_recognised_by_its_eof_when_a_push_has_no_content_type():
    body = (PAYLOADS / "fleet_exporter_rtx4090x8.openmetrics").read_bytes()
    assert PayloadParser().parse(body) == parse_reference(body, content_type=OPENMETRICS)


def test_rows_are_in_the_gpu_samples_column_order():
    assert GpuSample._fields == (
        "gpu_uuid", "gpu_index", "gpu_util", "mem_copy_util", "fb_used_mib", "fb_free_mib",
        "power_w", "energy_mj", "temp_c", "sm_clock_mhz", "mem_clock_mhz", "pcie_replay",
        "ecc_sbe", "ecc_dbe", "xid_last", "lost")


def test_bigint_columns_hold_python_ints_for_copy():
    body = (PAYLOADS / "dcgm_exporter_default_a100x8.prom").read_bytes()
    row = PayloadParser().parse(body).samples[6]
    assert type(row.pcie_replay) is int and type(row.xid_last) is int
