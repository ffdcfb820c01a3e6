"""The alert and SMTP settings are parsed once; a bad value stops start-up with a message naming the setting."""

from __future__ import annotations

import argparse

import pytest

from collector.settings import add_arguments, from_args
from fleetscope.errors import FleetscopeError


def _settings(argv: list[str], env: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(["--dsn", "postgresql://x@127.0.0.1/db", *argv]), environ=env or {},
                     resolve_dsn=False)


def test_alert_and_smtp_settings_come_from_flags_and_environment():
    settings = _settings(["--alert-eval-s", "0.5", "--no-alerts"], {
        "FLEETSCOPE_SMTP_HOST": "mail.example", "FLEETSCOPE_SMTP_FROM": "noc@fleet.example",
        "FLEETSCOPE_SMTP_USER": "noc", "FLEETSCOPE_SMTP_PASSWORD": "s3cret", "FLEETSCOPE_SMTP_PORT": "2525",
        "FLEETSCOPE_ALERT_FLAP_WINDOW_S": "600", "FLEETSCOPE_SMTP_HOST_UNUSED": "x"})
    assert (settings.alert_eval_s, settings.alerts_enabled, settings.alert_flap_window_s) == (0.5, False, 600)
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_user) == ("mail.example", 2525, "noc")
    assert settings.smtp_password == "s3cret" and "s3cret" not in repr(settings)
    assert _settings([], {"FLEETSCOPE_ALERTS": "0"}).alerts_enabled is False
    # Compose passes unset options as empty strings: empty means unset.
    assert _settings([], {"FLEETSCOPE_SMTP_HOST": "", "FLEETSCOPE_SMTP_FROM": ""}).smtp_host is None


@pytest.mark.parametrize("argv, env, named", [
    (["--alert-eval-s", "0"], {}, "--alert-eval-s / FLEETSCOPE_ALERT_EVAL_S"),
    (["--alert-max-attempts", "0"], {}, "FLEETSCOPE_ALERT_MAX_ATTEMPTS"),
    ([], {"FLEETSCOPE_ALERT_TIMEOUT_S": "soon"}, "FLEETSCOPE_ALERT_TIMEOUT_S"),
    ([], {"FLEETSCOPE_SMTP_HOST": "mail.example"}, "FLEETSCOPE_SMTP_FROM"),
    ([], {"FLEETSCOPE_SMTP_SECURITY": "ssl"}, "FLEETSCOPE_SMTP_SECURITY"),
    ([], {"FLEETSCOPE_SMTP_FROM": "not an address"}, "FLEETSCOPE_SMTP_FROM"),
    ([], {"FLEETSCOPE_SMTP_PASSWORD": "x"}, "FLEETSCOPE_SMTP_USER"),
    ([], {"FLEETSCOPE_ALERTS": "maybe"}, "FLEETSCOPE_ALERTS"),
])
def test_a_bad_alert_setting_stops_start_up_naming_it(argv, env, named):
    with pytest.raises(FleetscopeError, match=named):
        _settings(argv, env)
