"""The per-target series cache gives the same answers as no cache, and stays bounded."""

from __future__ import annotations

from pathlib import Path

from collector.parse import PayloadParser, SeriesCache, parse_reference
from tests.test_parse_cache_size import host

PAYLOADS = Path(__file__).parent / "fixtures" / "payloads"


def test_changed_label_values_on_the_same_target_are_parsed_afresh():
    parser = PayloadParser()
    cache = SeriesCache()
    first = 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",modelName="NVIDIA L4"} 40\n'
    second = 'DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-b",modelName="NVIDIA L40S"} 41\n'
    assert parser.parse(first, cache=cache).samples[0].gpu_uuid == "GPU-a"
    result = parser.parse(second, cache=cache)
    assert result.path == "cold"
    assert result == parse_reference(second)
    assert (result.samples[0].gpu_uuid, result.samples[0].gpu_index, result.samples[0].temp_c) == (
        "GPU-b", 1, 41.0)
    assert result.identities[0].model == "NVIDIA L40S"


def test_a_new_gpu_joining_a_warm_target_gets_its_own_row():
    parser = PayloadParser()
    cache = SeriesCache()
    body = (PAYLOADS / "dcgm_exporter_12fields_a100x8.prom").read_text()
    parser.parse(body, cache=cache)
    assert parser.parse(body, cache=cache).path == "warm"
    grown = body + 'DCGM_FI_DEV_GPU_TEMP{gpu="8",UUID="GPU-new"} 33\n'
    result = parser.parse(grown, cache=cache)
    assert result == parse_reference(grown)
    assert [s.gpu_uuid for s in result.samples][-1] == "GPU-new"
    assert parser.parse(grown, cache=cache).path == "warm"


def test_values_changing_between_scrapes_are_read_on_the_warm_path():
    parser = PayloadParser()
    cache = SeriesCache()
    body = (PAYLOADS / "dcgm_exporter_default_a100x8.prom").read_text()
    parser.parse(body, cache=cache)
    changed = body.replace("} 1410\n", "} 1395\n").replace("} 55.798000\n", "} NaN\n")
    result = parser.parse(changed, cache=cache)
    assert result.path == "warm"
    assert result == parse_reference(changed)
    assert result.samples[0].power_w is None and result.rejects == {"nan": 1}
    assert result.samples[2].sm_clock_mhz == 1395.0


def test_a_timestamped_payload_is_parsed_correctly_without_a_warm_shape():
    parser = PayloadParser()
    cache = SeriesCache()
    body = 'DCGM_FI_DEV_GPU_TEMP{UUID="GPU-a"} 40 1700000000000\n'
    for _ in range(2):
        result = parser.parse(body, cache=cache)
        assert result.path == "cold" and result == parse_reference(body)


def test_the_cache_keeps_only_the_latest_payloads_series_once_over_its_bound():
    parser = PayloadParser()
    cache = SeriesCache(max_entries=50)
    for scrape in range(10):
        # A pod label that changes every scrape: a new series each time.
        body = "".join(f'DCGM_FI_DEV_GPU_TEMP{{UUID="GPU-{g}",pod="p{scrape}"}} 40\n'
                       for g in range(8))
        assert parser.parse(body, cache=cache) == parse_reference(body)
        assert len(cache) <= 50
    assert parser.parse(body, cache=cache).path == "warm"  # the latest series stayed


def test_a_payload_larger_than_the_cache_is_still_parsed():
    parser = PayloadParser()
    cache = SeriesCache(max_entries=4)
    body = "".join(f'DCGM_FI_DEV_GPU_TEMP{{UUID="GPU-{g}"}} 40\n' for g in range(8))
    for _ in range(2):
        assert parser.parse(body, cache=cache) == parse_reference(body)
        assert len(cache) <= 4


def test_a_target_switching_format_or_label_limit_starts_a_fresh_cache():
    cache = SeriesCache()
    text = (PAYLOADS / "fleet_exporter_rtx4090x8.prom").read_text()
    om = (PAYLOADS / "fleet_exporter_rtx4090x8.openmetrics").read_text()
    parser = PayloadParser()
    assert parser.parse(text, cache=cache).path == "cold"
    assert parser.parse(om, cache=cache).path == "cold"
    assert parser.parse(om, cache=cache).path == "warm"
    assert PayloadParser(max_label_len=10).parse(om, cache=cache).path == "cold"


def test_bulk_and_per_cell_assembly_agree_on_every_fixture():
    # The bulk path only runs for ordinary values; the per-cell loop is its
    # reference and must give the same rows for them.
    from collector import parse

    for path in sorted(PAYLOADS.glob("*.prom")):
        text = path.read_text()
        cache = SeriesCache()
        PayloadParser().parse(text, cache=cache)
        plan = cache._plan
        lines = text.split("\n")
        xs = plan.values(lines)
        bulk = plan.shape.layout.assemble(xs, plan.gpus, "warm")
        cells = plan.shape.layout.assemble(xs, plan.gpus, "warm", bulk=False)
        assert bulk == cells, path.name
        assert isinstance(parse.ParsedPayload, type)


def test_hosts_of_one_shape_share_a_layout_and_read_their_own_gpus_and_values():
    parser = PayloadParser()
    text = (PAYLOADS / "dcgm_exporter_12fields_a100x8.prom").read_text()
    caches = [SeriesCache(), SeriesCache()]
    for scrape in (1, 2):
        for number, cache in enumerate(caches):
            body = host(text, number, scrape)
            result = parser.parse(body, cache=cache)
            assert result.path == ("cold" if scrape == 1 else "warm")
            assert result == parse_reference(body)
            assert {s.gpu_uuid[:8] for s in result.samples} == {f"GPU-{number:04x}"}
            assert result.samples[0].pcie_replay == scrape
    assert caches[0]._plan.shape is caches[1]._plan.shape
    assert caches[0]._plan.gpus.uuids != caches[1]._plan.gpus.uuids


def test_a_payload_changed_in_one_label_character_is_parsed_afresh():
    # Same length and structure, so only the hash of its text tells it apart.
    parser = PayloadParser()
    cache = SeriesCache()
    body = (PAYLOADS / "dcgm_exporter_12fields_a100x8.prom").read_text()
    parser.parse(body, cache=cache)
    changed = body.replace('pod="llama-ft-7d9c5b8f6-x2kqp"', 'pod="llama-ft-7d9c5b8f6-x2kqq"', 1)
    assert len(changed) == len(body) and changed != body
    result = parser.parse(changed, cache=cache)
    assert result.path == "cold" and result == parse_reference(changed)
    moved = body.replace("GPU-d2eac902", "GPU-d2eac903")
    result = parser.parse(moved, cache=cache)
    assert result.path == "cold" and result == parse_reference(moved)
    assert result.samples[0].gpu_uuid.startswith("GPU-d2eac903")


def test_a_warm_target_keeps_no_line_of_its_payload():
    parser = PayloadParser()
    cache = SeriesCache()
    body = (PAYLOADS / "dcgm_exporter_default_a100x8.prom").read_text()
    parser.parse(body, cache=cache)
    assert parser.parse(body, cache=cache).path == "warm"
    assert len(cache) == 0
