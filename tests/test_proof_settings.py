"""The proof settings are parsed and checked once at start-up; a bad value names its flag or variable."""

from __future__ import annotations

import argparse

import pytest

from collector.app import default_components, proof_component
from collector.settings import add_arguments, from_args
from fleetscope.errors import FleetscopeError

DSN = "postgresql://fleetscope@127.0.0.1:5432/fleetscope"


def parse(argv: list[str], env: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(["--dsn", DSN, *argv]), environ=env or {}, resolve_dsn=False)


def test_rounds_run_hourly_for_a_quarter_of_the_nodes_at_full_scale_by_default():
    s = parse([])
    assert (s.proof_enabled, s.proof_interval_s, s.proof_share, s.proof_scale) == (True, 3600.0, 0.25, 1.0)
    assert proof_component in default_components(s)


def test_flags_win_over_the_environment():
    env = {"FLEETSCOPE_PROOF_INTERVAL_S": "600", "FLEETSCOPE_PROOF_SHARE": "0.5", "FLEETSCOPE_PROOF_SCALE": "1e-6"}
    s = parse(["--proof-share", "1"], env)
    assert (s.proof_interval_s, s.proof_share, s.proof_scale) == (600.0, 1.0, 1e-6)


@pytest.mark.parametrize("argv, env", [(["--no-proof"], {}), ([], {"FLEETSCOPE_PROOF": "0"})])
def test_rounds_can_be_turned_off(argv, env):
    s = parse(argv, env)
    assert not s.proof_enabled and proof_component not in default_components(s)


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["--proof-share", "0"], {}, "--proof-share"),
    (["--proof-share", "1.5"], {}, "--proof-share"),
    ([], {"FLEETSCOPE_PROOF_SHARE": "nan"}, "FLEETSCOPE_PROOF_SHARE"),
    (["--proof-scale", "0"], {}, "--proof-scale"),
    (["--proof-scale", "2"], {}, "--proof-scale"),
    (["--proof-interval-s", "0.1"], {}, "--proof-interval-s"),
    ([], {"FLEETSCOPE_PROOF_INTERVAL_S": "hourly"}, "FLEETSCOPE_PROOF_INTERVAL_S"),
    ([], {"FLEETSCOPE_PROOF": "sometimes"}, "FLEETSCOPE_PROOF"),
])
def test_a_bad_proof_setting_stops_start_up_naming_it(argv, env, named):
    with pytest.raises(FleetscopeError, match=named):
        parse(argv, env)
