"""Suspicious values are dropped or clamped and counted by reason; garbage is refused."""

from __future__ import annotations

import pytest

from collector.parse import ParseError, PayloadParser, SeriesCache

UUID = 'UUID="GPU-11111111-2222-3333-4444-555555555555",gpu="0"'


def parse_all_paths(body: str, parser: PayloadParser | None = None):
    """Reference, cold and warm results, checked equal; returns the result."""
    parser = parser or PayloadParser()
    cache = SeriesCache()
    results = [parser.parse_reference(body), parser.parse(body, cache=cache),
               parser.parse(body, cache=cache)]
    assert [r.path for r in results] == ["reference", "cold", "warm"]
    assert results[0] == results[1] == results[2]
    return results[0]


@pytest.mark.parametrize(("line", "column", "reason", "stored"), [
    (f"DCGM_FI_DEV_GPU_TEMP{{{UUID}}} NaN", "temp_c", "nan", None),
    (f"DCGM_FI_DEV_POWER_USAGE{{{UUID}}} +Inf", "power_w", "nan", None),
    (f"DCGM_FI_DEV_FB_USED{{{UUID}}} -Inf", "fb_used_mib", "nan", None),
    (f"DCGM_FI_DEV_FB_USED{{{UUID}}} -1", "fb_used_mib", "negative", None),
    (f"DCGM_FI_DEV_GPU_UTIL{{{UUID}}} 101.5", "gpu_util", "clamped_util", 100.0),
    ('nvidia_smi_utilization_memory_ratio{uuid="11111111-2222-3333-4444-555555555555"} 1.2', "mem_copy_util", "clamped_util", 100.0),
    (f"DCGM_FI_DEV_POWER_USAGE{{{UUID}}} 1500.5", "power_w", "absurd_power", None),
    (f"DCGM_FI_DEV_GPU_TEMP{{{UUID}}} 151", "temp_c", "absurd_temp", None),
    (f"DCGM_FI_DEV_PCIE_REPLAY_COUNTER{{{UUID}}} 9223372036854775794", "pcie_replay", "dcgm_blank", None),
])
def test_each_suspicious_value_is_counted_under_its_reason(line, column, reason, stored):
    result = parse_all_paths(f"DCGM_FI_DEV_SM_CLOCK{{{UUID}}} 1410\n{line}\n")
    assert result.rejects == {reason: 1}
    assert getattr(result.samples[0], column) == stored
    assert result.samples[0].sm_clock_mhz == 1410.0  # the rest of the row stays


def test_power_above_one_and_a_half_times_the_cards_own_limit_is_absurd():
    uuid = 'uuid="abcd"'
    body = (f"nvidia_smi_power_max_limit_watts{{{uuid}}} 200\n"
            f"nvidia_smi_power_draw_watts{{{uuid}}} 301\n")
    result = parse_all_paths(body)
    assert result.rejects == {"absurd_power": 1}
    assert result.samples[0].power_w is None
    assert parse_all_paths(body.replace("301", "299")).samples[0].power_w == 299.0


def test_a_label_value_over_the_limit_rejects_the_series():
    body = (f'DCGM_FI_DEV_GPU_TEMP{{{UUID},pod="{"p" * 300}"}} 40\n'
            f"DCGM_FI_DEV_SM_CLOCK{{{UUID}}} 1410\n")
    result = parse_all_paths(body)
    assert result.rejects == {"label_too_long": 1}
    assert result.samples[0].temp_c is None
    assert result.samples[0].sm_clock_mhz == 1410.0
    assert parse_all_paths(body, PayloadParser(max_label_len=400)).rejects == {}


def test_several_reasons_are_counted_together():
    body = "".join(f'DCGM_FI_DEV_GPU_UTIL{{UUID="GPU-{i}"}} {v}\n'
                   for i, v in enumerate(["NaN", "NaN", "-2", "250", "50"]))
    result = parse_all_paths(body)
    assert result.rejects == {"nan": 2, "negative": 1, "clamped_util": 1}
    assert [s.gpu_util for s in result.samples] == [None, None, None, 100.0, 50.0]


def test_exporter_health_is_read_and_a_nan_is_counted():
    assert parse_all_paths("fleet_exporter_last_collect_success 0\n").exporter_ok is False
    result = parse_all_paths("fleet_exporter_last_collect_success NaN\n")
    assert result.exporter_ok is None and result.rejects == {"nan": 1}


def test_series_without_a_uuid_are_not_gpus():
    result = parse_all_paths('DCGM_FI_DEV_GPU_TEMP{gpu="0"} 40\nDCGM_FI_DEV_GPU_TEMP 41\n')
    assert result.samples == [] and result.series == 2


def test_more_series_than_the_limit_raise_too_many_series():
    body = "".join(f'DCGM_FI_DEV_GPU_TEMP{{UUID="GPU-{i}"}} 40\n' for i in range(11))
    parser = PayloadParser(max_series=10)
    for parse in (parser.parse, parser.parse_reference):
        with pytest.raises(ParseError) as info:
            parse(body)
        assert info.value.reason == "too_many_series"
    assert PayloadParser(max_series=11).parse(body).series == 11


def test_a_warm_cache_still_enforces_a_smaller_series_limit():
    body = "".join(f'DCGM_FI_DEV_GPU_TEMP{{UUID="GPU-{i}"}} 40\n' for i in range(11))
    cache = SeriesCache()
    PayloadParser().parse(body, cache=cache)
    with pytest.raises(ParseError, match="too_many_series"):
        PayloadParser(max_series=10).parse(body, cache=cache)


@pytest.mark.parametrize("body", [
    b"this is not prometheus\n",
    b'DCGM_FI_DEV_GPU_TEMP{UUID="GPU-1" 40\n',
    b'DCGM_FI_DEV_GPU_TEMP{UUID="GPU-1"} forty\n',
    b'DCGM_FI_DEV_GPU_TEMP{UUID="GPU-1",UUID="GPU-2"} 40\n',
    b'DCGM_FI_DEV_GPU_TEMP{UUID="GPU-1"} 1_000\n',
    b"# TYPE DCGM_FI_DEV_GPU_TEMP\n",
    b"\xff\xfe\x00garbage",
])
def test_garbage_raises_parse_error_unparsable_with_a_message(body):
    parser = PayloadParser()
    for parse in (parser.parse, parser.parse_reference):
        with pytest.raises(ParseError) as info:
            parse(body)
        assert info.value.reason == "unparsable"
        assert info.value.detail


def test_openmetrics_without_eof_is_unparsable():
    with pytest.raises(ParseError, match="unparsable"):
        PayloadParser().parse(b"fleet_exporter_last_collect_success 1\n",
                              content_type="application/openmetrics-text; version=1.0.0")


def test_a_uuid_the_database_cannot_store_is_refused_whole_by_both_paths():
    from collector.parse import PayloadParser, ParseError, SeriesCache

    parser = PayloadParser()
    for uuid in ("GPU-" + "a" * 200, "GPU-with\x01control"):
        body = f'DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="{uuid}"}} 5\n'.encode()
        for parse in (lambda: parser.parse(body, cache=SeriesCache()), lambda: parser.parse_reference(body)):
            with pytest.raises(ParseError) as err:
                parse()
            assert err.value.reason == "invalid_uuid"


def test_a_nul_in_an_identity_label_is_dropped_so_the_row_can_be_stored():
    from collector.parse import PayloadParser

    body = 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-1",modelName="NVIDIA A\x00100"} 5\n'.encode()
    parser = PayloadParser()
    assert parser.parse(body).identities[0].model == "NVIDIA A100"
    assert parser.parse_reference(body).identities[0].model == "NVIDIA A100"


@pytest.mark.parametrize(("labels", "gpu_index"), [
    ('UUID="GPU-11111111-2222-3333-4444-555555555555",gpu="7"', 7),
    ('UUID="GPU-11111111-2222-3333-4444-555555555555",gpu="32767"', 32767),
    ('UUID="GPU-11111111-2222-3333-4444-555555555555",gpu="32768"', None),  # not a smallint: no GPU index
    ('UUID="GPU-11111111-2222-3333-4444-555555555555",gpu="99999999999999999999"', None),
])
def test_a_gpu_index_that_its_column_cannot_hold_is_no_index(labels, gpu_index):
    result = parse_all_paths(f"DCGM_FI_DEV_SM_CLOCK{{{labels}}} 1410\n")
    assert result.samples[0].gpu_index == gpu_index
