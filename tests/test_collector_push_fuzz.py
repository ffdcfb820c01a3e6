"""Whatever a client sends to /api/v1/push, the answer is never a 5xx, and only a 204 writes."""

from __future__ import annotations

import gzip
import itertools

from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.collector_harness import FLEET_OPENMETRICS, FLEET_PROM, bearer, register

HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
LINES = FLEET_PROM.splitlines(keepends=True) + FLEET_OPENMETRICS.splitlines(keepends=True)


@st.composite
def mangled_exposition(draw) -> bytes:
    """Real exposition lines, some dropped, repeated, cut or corrupted: the parser's edge cases."""
    picked = draw(st.lists(st.sampled_from(LINES), max_size=60))
    out = []
    for line in picked:
        action = draw(st.sampled_from(["keep", "keep", "keep", "cut", "flip", "value"]))
        if action == "cut":
            line = line[:draw(st.integers(0, len(line)))]
        elif action == "flip" and line:
            i = draw(st.integers(0, len(line) - 1))
            line = line[:i] + bytes([draw(st.integers(0, 255))]) + line[i + 1:]
        elif action == "value":
            value = draw(st.sampled_from([b"NaN", b"+Inf", b"-Inf", b"-1", b"1e308", b"150", b"1_0", b"0x10", b""]))
            line = line.rsplit(b" ", 1)[0] + b" " + value + b"\n"
        out.append(line)
    if draw(st.booleans()):
        out.append(b"# EOF\n")
    return b"".join(out)


BODIES = st.one_of(st.binary(max_size=3000), mangled_exposition(), st.just(FLEET_PROM), st.just(FLEET_OPENMETRICS))
CONTENT_TYPES = st.one_of(st.none(), HEADER_TEXT, st.sampled_from([
    "text/plain; version=0.0.4", "application/openmetrics-text; version=1.0.0", "application/json",
    "application/openmetrics-text", "text/plain; charset=latin-1", ";;;", ""]))
ENCODINGS = st.one_of(st.none(), st.none(), st.sampled_from(["gzip", "x-gzip", "GZIP", "identity", "br", "", " gzip "]),
                      HEADER_TEXT)
_names = itertools.count()


@given(body=BODIES, content_type=CONTENT_TYPES, encoding=ENCODINGS,
       compress=st.sampled_from(["no", "yes", "truncated"]),
       auth=st.sampled_from(["valid"] * 8 + ["operator", "junk"]), junk=HEADER_TEXT)
@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
async def test_random_push_bodies_and_headers_never_get_a_5xx(client, storage, operator_token, body, content_type,
                                                                encoding, compress, auth, junk):
    # A fresh node per example, so that the rate limit does not hide the parser.
    node_id, node_token = await register(client, operator_token, f"fuzz-{next(_names)}", interval_s=3600)
    if compress != "no":
        body = gzip.compress(body)
        if compress == "truncated":
            body = body[: len(body) // 2]
    headers = {}
    if auth == "valid":
        headers.update(bearer(node_token))
    elif auth == "operator":
        headers.update(bearer(operator_token))
    else:
        headers["Authorization"] = junk
    if content_type is not None:
        headers["Content-Type"] = content_type
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    before = len(storage.committed)

    response = await client.post("/api/v1/push", data=body, headers=headers)
    event(f"HTTP {response.status}")  # --hypothesis-show-statistics shows the mix

    assert response.status in (204, 400, 401, 413, 415, 429), (response.status, await response.text())
    if response.status == 204:
        assert [b.node_id for b in storage.committed[before:]] == [node_id]
    else:
        assert len(storage.committed) == before
        assert (await response.json())["error"]
