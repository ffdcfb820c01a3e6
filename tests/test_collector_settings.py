"""The collector's settings are parsed and checked once; a bad value names its flag or variable."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from collector.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    CollectorSettings,
    add_arguments,
    from_args,
)
from fleetscope.errors import FleetscopeError

DSN = "postgresql://fleetscope@127.0.0.1:5432/fleetscope"


def parse(argv: list[str], env: dict[str, str] | None = None) -> CollectorSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(["--dsn", DSN, *argv]), environ=env or {}, resolve_dsn=False)


def test_the_defaults_are_the_contracts():
    s = parse([])
    assert (s.host, s.port, s.shard, s.admin_token) == ("127.0.0.1", 9300, (0, 1), None)
    assert s.collector_id == f"{socket.gethostname()}:9300"
    assert (s.max_body_bytes, s.max_decompressed_bytes) == (DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DECOMPRESSED_BYTES)
    assert (s.max_series_per_node, s.max_label_len, s.push_min_interval_s) == (4096, 256, 1.0)
    assert s.spool_dir is not None and s.scrape_enabled


def test_flags_win_over_the_environment_which_wins_over_defaults():
    env = {"FLEETSCOPE_COLLECTOR_PORT": "9400", "FLEETSCOPE_SHARD": "1/3", "FLEETSCOPE_ADMIN_TOKEN": "a" * 32,
           "FLEETSCOPE_SPOOL_DIR": "/tmp/spool", "FLEETSCOPE_SCRAPE": "off"}
    s = parse(["--port", "9500", "--host", "0.0.0.0"], env)
    assert (s.port, s.host, s.shard, s.admin_token, s.spool_dir) == (9500, "0.0.0.0", (1, 3), "a" * 32,
                                                                     Path("/tmp/spool"))
    assert s.collector_id.endswith(":9500") and not s.scrape_enabled
    assert "a" * 32 not in repr(s)  # the admin token never reaches a log line


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["--shard", "3/3"], {}, "--shard"),
    (["--shard=-1/2"], {}, "--shard"),
    (["--shard", "one"], {}, "--shard"),
    ([], {"FLEETSCOPE_SHARD": "0/0"}, "FLEETSCOPE_SHARD"),
    (["--port", "70000"], {}, "--port"),
    (["--port", "http"], {}, "--port"),
    ([], {"FLEETSCOPE_COLLECTOR_PORT": "x"}, "FLEETSCOPE_COLLECTOR_PORT"),
    (["--max-body-bytes", "0"], {}, "--max-body-bytes"),
    (["--max-series-per-node", "-5"], {}, "--max-series-per-node"),
    (["--push-min-interval-s", "nan"], {}, "--push-min-interval-s"),
    ([], {"FLEETSCOPE_ADMIN_TOKEN": "short"}, "FLEETSCOPE_ADMIN_TOKEN"),
    ([], {"FLEETSCOPE_SCRAPE": "maybe"}, "FLEETSCOPE_SCRAPE"),
    (["--host", ""], {"FLEETSCOPE_COLLECTOR_HOST": ""}, "--host"),
])
def test_a_bad_value_stops_start_up_naming_the_setting(argv, env, named):
    with pytest.raises(FleetscopeError, match=named):
        parse(argv, env)


def test_a_dsn_is_required():
    with pytest.raises(FleetscopeError, match="--dsn"):
        CollectorSettings(dsn="")
