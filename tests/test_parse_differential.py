"""The fast path reads exactly what prometheus_client's parsers read.

Hypothesis builds payload shapes (label orders, escapes, whitespace, comments,
HELP/TYPE, timestamps, odd values, unknown metrics, unicode, OpenMetrics),
renders each with two sets of values, and checks that the fast path, cold and
then warm on one target's cache, gives the reference's result or its error.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import metricnames
from collector.parse import ParseError, PayloadParser, SeriesCache

OPENMETRICS = "application/openmetrics-text; version=1.0.0"

NAMES = sorted(metricnames.METRICS) + [
    "foo", "foo_total", "bar_bucket", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "weird:name",
    "nvidia_smi_index", "go_goroutines",
]
BAD_NAMES = ["1bad", "a-b", ""]
LABEL_NAMES = ["UUID", "uuid", "gpu", "modelName", "pci_bus_id", "Hostname",
               "DCGM_FI_DRIVER_VERSION", "xid", "GPU_I_ID", "index", "name", "serial",
               "model", "compute_cap", "container", "pod", "le", "quantile"]
UUIDS = ["GPU-aaaa", "GPU-bbbb", "cccc-dddd", "MIG-eeee", "", "GPU-" + "f" * 300]
# Rendered label value pieces: escapes the reference knows, ones it keeps as
# written, characters that delimit elsewhere, unicode and odd whitespace.
PIECES = ["a", "Z", "0", " ", "\\\\", '\\"', "\\n", "\\t", "}", "{", ",", "=", "#",
          "é", "漢", "\u2028", "\r", "\x85", "\x0b"]
VALUES = ["0", "1", "42", "-3", "1.5", "1e3", "-2.5E-3", "NaN", "nan", "+Inf", "-Inf",
          "Inf", "9223372036854775794", "١٢", "1.", ".5", " 7", "7\t", "+5", "infinity",
          "1" * 400, "101", "151", "1600", "0.95", "1700", "2.5e-1"]
BAD_VALUES = ["1_000", "0x10", "", "abc", "1 2 3"]

label_value = st.one_of(
    st.sampled_from(UUIDS),
    st.lists(st.sampled_from(PIECES), max_size=6).map("".join),
    st.sampled_from(["0", "3", "79", "8.6", "NVIDIA A100-SXM4-80GB", "[N/A]", "12"]),
)
# Mostly distinct label names: a repeated one makes the whole line invalid.
labels = st.one_of(
    st.lists(st.tuples(st.sampled_from(LABEL_NAMES * 20 + ["__bad"]), label_value),
             max_size=5, unique_by=lambda pair: pair[0]),
    st.lists(st.tuples(st.sampled_from(LABEL_NAMES[:3]), label_value), max_size=3),
)
value = st.one_of(
    st.sampled_from(VALUES * 10 + BAD_VALUES),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10 ** 20), max_value=10 ** 20).map(str),
)


@st.composite
def sample_line(draw):
    name = draw(st.one_of(st.sampled_from(NAMES), st.sampled_from(BAD_NAMES))
               if draw(st.integers(0, 20)) == 0 else st.sampled_from(NAMES))
    pairs = draw(labels)
    text = name
    if pairs or draw(st.booleans()):
        body = ",".join(f'{k}="{v}"' for k, v in pairs)
        if pairs and draw(st.integers(0, 10)) == 0:
            body += ","
        text += "{" + body + "}"
    sep = draw(st.sampled_from([" "] * 12 + ["  ", "\t", " \t"]))
    timestamp = draw(st.sampled_from([""] * 30 + [" 1700000000000", " -5", " 1.5", " x"]))
    prefix = draw(st.sampled_from([""] * 12 + [" ", "\t"]))
    suffix = draw(st.sampled_from([""] * 12 + [" ", "\r", "\t"]))
    return ("sample", prefix + text + sep, timestamp + suffix)


@st.composite
def other_line(draw):
    name = draw(st.sampled_from(NAMES[:8] + ["foo", "1bad"]))
    return ("other", draw(st.sampled_from([
        f"# HELP {name} some help \\n text",
        f"# HELP {name}",
        f"# TYPE {name} " + draw(st.sampled_from(["gauge", "counter", "untyped", "summary",
                                                   "histogram", "info"])),
        f"# TYPE {name}",
        "# just a comment", "#", "", "   ", "# HELP", "  # TYPE x gauge", "#\tHELP x y",
    ] * 4 + ["garbage line", "x{", '{"quoted.name"} 1'])), "")


text_payload = st.lists(st.one_of(sample_line(), sample_line(), other_line()),
                        min_size=1, max_size=14)


def render(spec, values):
    it = iter(values)
    out = []
    for kind, head, tail in spec:
        out.append(head + next(it) + tail if kind == "sample" else head)
    return "\n".join(out) + "\n"


def outcome(parse, body, **kw):
    try:
        return parse(body, **kw)
    except ParseError as exc:
        return ("error", exc.reason)


def check(spec_values, content_type=None):
    parser = PayloadParser()
    cache = SeriesCache()
    for body in spec_values:
        expected = outcome(parser.parse_reference, body, content_type=content_type)
        # Twice on one cache: cold or warm, then the same payload again.
        for _ in range(2):
            assert outcome(parser.parse, body, content_type=content_type, cache=cache) == expected
        assert outcome(parser.parse, body, content_type=content_type) == expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=text_payload, data=st.data())
def test_text_payloads_parse_as_the_reference_parses_them(spec, data):
    n = sum(1 for kind, _, _ in spec if kind == "sample")
    first = data.draw(st.lists(value, min_size=n, max_size=n))
    second = data.draw(st.lists(value, min_size=n, max_size=n))
    check([render(spec, first), render(spec, second), render(spec, first)])


def other_host(body):
    """The payload as a host with other UUIDs would send it: two swapped, one renamed."""
    swapped = body.replace("GPU-aaaa", "\0").replace("GPU-bbbb", "GPU-aaaa").replace("\0", "GPU-bbbb")
    return swapped.replace("cccc-dddd", "cccc-9999").replace("MIG-eeee", "MIG-eeeeeeee")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=text_payload, data=st.data())
def test_hosts_sharing_a_shape_each_parse_as_the_reference_parses_them(spec, data):
    # The second host's cold parse finds the first host's shape in the shared
    # registry; each must still read its own UUIDs and values.
    n = sum(1 for kind, _, _ in spec if kind == "sample")
    first = data.draw(st.lists(value, min_size=n, max_size=n))
    second = data.draw(st.lists(value, min_size=n, max_size=n))
    parser = PayloadParser()
    caches = [SeriesCache(), SeriesCache()]
    for values in (first, second):
        body = render(spec, values)
        for cache, text in zip(caches, (body, other_host(body))):
            expected = outcome(parser.parse_reference, text)
            for _ in range(2):
                assert outcome(parser.parse, text, cache=cache) == expected


@st.composite
def om_family(draw, index):
    typ = draw(st.sampled_from(["gauge", "counter", "info", "unknown", "summary"]))
    name = f"{draw(st.sampled_from(['DCGM_FI_DEV_GPU_UTIL', 'DCGM_FI_DEV_POWER_USAGE', 'fleet_gpu', 'nvidia_smi_gpu', 'DCGM_FI_DEV_PCIE_REPLAY_COUNTER', 'fleet_exporter_last_collect_success']))}"
    name = f"{name}_{index}" if draw(st.integers(0, 3)) == 0 else name
    suffix = {"counter": "_total", "info": "_info"}.get(typ, "")
    lines = []
    if draw(st.booleans()):
        lines.append(("other", f"# HELP {name} help text", ""))
    lines.append(("other", f"# TYPE {name} {typ}", ""))
    for uuid in draw(st.lists(st.sampled_from(UUIDS[:4]), unique=True, max_size=3)):
        pairs = [("UUID", uuid), ("gpu", "0")]
        if typ == "summary":
            pairs.append(("quantile", "0.5"))
        pairs = draw(st.permutations(pairs))
        body = ",".join(f'{k}="{v}"' for k, v in pairs)
        sep_ts = draw(st.sampled_from([(" ", "")] * 30 + [(" ", " 1700000000.5"), ("  ", "")]))
        lines.append(("sample", f"{name}{suffix}{{{body}}}{sep_ts[0]}", sep_ts[1]))
    return lines


@st.composite
def om_payload(draw):
    families = []
    for i in range(draw(st.integers(1, 4))):
        families.extend(draw(om_family(i)))
    families.append(("other", "# EOF", ""))
    mutation = draw(st.integers(0, 12))
    if mutation == 0:
        families.pop()  # no EOF
    elif mutation == 1:
        families.insert(draw(st.integers(0, len(families) - 1)), ("other", "", ""))
    return families


om_value = st.sampled_from(["0", "1", "1.0", "42", "2.5", "1e3", "7", "0.5"] * 8
                           + ["-1", "NaN", "+Inf", " 1", "1_0"])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=om_payload(), data=st.data())
def test_openmetrics_payloads_parse_as_the_reference_parses_them(spec, data):
    n = sum(1 for kind, _, _ in spec if kind == "sample")
    renders = []
    for _ in range(3):
        values = data.draw(st.lists(om_value, min_size=n, max_size=n))
        text = render(spec, values)
        renders.append(text if data.draw(st.booleans()) else text.rstrip("\n"))
    check(renders, content_type=OPENMETRICS)
