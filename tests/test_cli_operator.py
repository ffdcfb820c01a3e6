"""An operator's CLI end to end against a real collector: node add/list/pause/resume, channel add/list/test/remove."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from fleetscope.registry import create_operator
from tests.collector_process import WebhookSink, collector_process


def fleetscope(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("FLEETSCOPE_OPERATOR_TOKEN", "FLEETSCOPE_COLLECTOR_URL")}
    return subprocess.run([sys.executable, "-m", "fleetscope.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**clean, **(env or {})})


@pytest.fixture
def operators(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return create_operator(conn, "acme")[1], create_operator(conn, "rival")[1]


def test_an_operator_registers_a_node_adds_tests_and_removes_a_channel_and_pauses_the_node(dsn, tmp_path, operators):
    acme, rival = operators
    with collector_process(dsn, tmp_path) as url, WebhookSink() as hook:
        env = {"FLEETSCOPE_OPERATOR_TOKEN": acme, "FLEETSCOPE_COLLECTOR_URL": url}
        added = fleetscope("node", "add", "gpu-box-1", "--scrape-url", "http://127.0.0.1:9835/metrics", env=env)
        assert added.returncode == 0, added.stderr
        node_token = added.stdout.strip()
        assert node_token.startswith("fsn_") and "\n" not in node_token  # the token alone on stdout, for scripts
        assert "registered" in added.stderr and "shown once" in added.stderr
        node_id = int(added.stderr.split()[1])
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT name, scrape_url, operator_id IS NOT NULL FROM nodes WHERE node_id = %s",
                                (node_id,)).fetchone() == ("gpu-box-1", "http://127.0.0.1:9835/metrics", True)

        # --token and --collector work as well as the environment.
        listed = fleetscope("node", "list", "--token", acme, "--collector", url)
        assert listed.returncode == 0, listed.stderr
        assert "gpu-box-1" in listed.stdout and " new " in listed.stdout and " no " in listed.stdout

        channel = fleetscope("channel", "add", "webhook", hook.url, env=env)
        assert channel.returncode == 0, channel.stderr
        channel_id = int(channel.stdout.split()[1])
        assert f"{channel_id}" in fleetscope("channel", "list", env=env).stdout
        tested = fleetscope("channel", "test", str(channel_id), env=env)
        assert tested.returncode == 0, tested.stderr
        assert "delivered" in tested.stdout
        assert [(b["event"], b["channel_id"], b["node_id"]) for b in hook.bodies] == [("test", channel_id, None)]

        paused = fleetscope("node", "pause", str(node_id), env=env)
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        assert " yes " in fleetscope("node", "list", env=env).stdout
        assert "resumed" in fleetscope("node", "resume", str(node_id), env=env).stdout

        # Another operator's token touches none of it: not found, as for what does not exist.
        theirs = {"FLEETSCOPE_OPERATOR_TOKEN": rival, "FLEETSCOPE_COLLECTOR_URL": url}
        for args in (("node", "pause", str(node_id)), ("channel", "remove", str(channel_id)),
                     ("channel", "test", str(channel_id))):
            result = fleetscope(*args, env=theirs)
            assert result.returncode == 2 and "(HTTP 404, not_found)" in result.stderr, (args, result.stderr)
        assert "gpu-box-1" not in fleetscope("node", "list", env=theirs).stdout

        removed = fleetscope("channel", "remove", str(channel_id), env=env)
        assert removed.returncode == 0 and "removed" in removed.stdout
        assert fleetscope("channel", "list", env=env).stdout == ""
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT paused FROM nodes WHERE node_id = %s", (node_id,)).fetchone() == (False,)


def test_the_cli_names_each_problem_and_exits_2(dsn, tmp_path, operators):
    acme, _ = operators
    no_token = fleetscope("node", "add", "x", "--collector", "http://127.0.0.1:1")
    assert no_token.returncode == 2 and "no operator token: pass --token or set $FLEETSCOPE_OPERATOR_TOKEN" \
        in no_token.stderr
    unreachable = fleetscope("channel", "list", "--token", acme, "--collector", "http://127.0.0.1:1")
    assert unreachable.returncode == 2 and "cannot reach the collector at http://127.0.0.1:1" in unreachable.stderr
    assert "must be http(s)://host[:port]" in fleetscope("node", "list", "--token", acme, "--collector",
                                                         "ftp://x").stderr
    bad_kind = fleetscope("channel", "add", "pager", "x", "--token", acme)
    assert bad_kind.returncode == 2 and "invalid choice: 'pager'" in bad_kind.stderr
    with collector_process(dsn, tmp_path, allow_private=False) as url:
        env = {"FLEETSCOPE_OPERATOR_TOKEN": acme, "FLEETSCOPE_COLLECTOR_URL": url}
        wrong = fleetscope("node", "add", "x", env={**env, "FLEETSCOPE_OPERATOR_TOKEN": "fso_" + "A" * 43})
        assert wrong.returncode == 2 and "the collector refused the operator token" in wrong.stderr
        # The collector's own checks apply: no SSRF, valid fields, unique names.
        private = fleetscope("node", "add", "x", "--scrape-url", "http://169.254.169.254/metrics", env=env)
        assert private.returncode == 2 and "refused_target" in private.stderr and "public addresses" \
            in private.stderr
        hook = fleetscope("channel", "add", "webhook", "http://127.0.0.1:8080/hook", env=env)
        assert hook.returncode == 2 and "alerts go to public addresses only" in hook.stderr
        interval = fleetscope("node", "add", "x", "--interval-s", "7", env=env)
        assert interval.returncode == 2 and "interval_s" in interval.stderr and "must divide 3600" in interval.stderr
        assert fleetscope("node", "add", "dup", env=env).returncode == 0
        dup = fleetscope("node", "add", "dup", env=env)
        assert dup.returncode == 2 and "you already have a node named 'dup'" in dup.stderr
        missing = fleetscope("channel", "test", "999999", env=env)
        assert missing.returncode == 2 and "no channel '999999'" in missing.stderr
        assert "Traceback" not in missing.stderr + dup.stderr + private.stderr
