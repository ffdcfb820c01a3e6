"""The collector's settings: flags and environment, parsed and checked once.

``CollectorSettings`` checks itself when it is built (STYLE.md rule 4): a bad
value raises FleetscopeError with a message that names the flag and the
environment variable, so the collector never starts half-configured. Flags win
over the environment, the environment over the defaults below.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fleetscope.errors import FleetscopeError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

DEFAULT_HOST = "127.0.0.1"  # loopback: exposing the collector is a decision, not a default
DEFAULT_PORT = 9300
# A gzip'd 8-GPU payload is ~3 KiB and its text ~25 KiB; 4 MiB compressed and
# 16 MiB of text leave room for the largest hosts (dcgm-exporter with every
# field on a 16-GPU box is ~1 MiB of text) while bounding one request's memory.
DEFAULT_MAX_BODY_BYTES = 4 * 2**20
DEFAULT_MAX_DECOMPRESSED_BYTES = 16 * 2**20
# JSON API bodies (registration, jobs, channels) are a few hundred bytes.
DEFAULT_MAX_JSON_BYTES = 64 * 2**10
# Same limits as the parser's (collector/parse.py explains the numbers).
DEFAULT_MAX_SERIES_PER_NODE = 4096
DEFAULT_MAX_LABEL_LEN = 256
# A node may push at most once per max(this, interval_s / 2) seconds: twice
# its interval is plenty for liveness (one push per slot is what counts), and
# the floor stops a 5 s node from pushing in a tight loop.
DEFAULT_PUSH_MIN_INTERVAL_S = 1.0
# Nodes whose parser caches are kept (LRU). A warm cache is ~250 bytes per
# series and a node sends ~200 series, so 4096 nodes is ~200 MiB at most.
DEFAULT_PUSH_CACHE_NODES = 4096
# Token -> node/operator lookups are cached this long: a push costs a dict
# lookup instead of a query, and a deleted node stops pushing within a minute.
DEFAULT_TOKEN_CACHE_S = 60.0
DEFAULT_DB_POOL_SIZE = 8
# A request waits at most this long for a database connection before it is
# answered 503: better a fast "try again" than a pile of stuck requests.
DEFAULT_DB_TIMEOUT_S = 5.0
# The scraper's knobs, kept here so `fleetscope collector` parses them once;
# the values are collector/scrape.py's DEFAULT_CONCURRENCY and
# collector/schedule.py's MAX_TIMEOUT_S, which explain them.
DEFAULT_SCRAPE_CONCURRENCY = 1024
DEFAULT_SCRAPE_TIMEOUT_S = 10.0
# Integrity checks every 5 minutes: a fake GPU shows on the public page within
# minutes, and all checks over 80,000 GPUs cost a few seconds (docs/benchmarks.md).
DEFAULT_INTEGRITY_INTERVAL_S = 300.0
# A published snapshot with its bundle every hour (issue 6); 0 turns it off.
DEFAULT_PUBLISH_INTERVAL_S = 3600
# An admin token shorter than this is a typo or a placeholder, not a secret.
MIN_ADMIN_TOKEN_LEN = 16
# The alert loop's knobs (issue 7); collector/alerts.py explains the values.
DEFAULT_ALERT_EVAL_S = 10.0
DEFAULT_ALERT_FLAP_WINDOW_S = 3600.0
DEFAULT_ALERT_TIMEOUT_S = 10.0
DEFAULT_ALERT_MAX_ATTEMPTS = 8
DEFAULT_ALERT_RETRY_BASE_S = 5.0
# Email alerts: the submission port with STARTTLS is what mail providers offer.
DEFAULT_SMTP_PORT = 587
# Proof of GPU (issue 14, docs/proof.md): a round about every hour, for a
# quarter of the waiting nodes, at the datasheet throughput (scale 1). Rounds
# at most a week apart; the demo runs one every 20 s (collector/demo.py).
DEFAULT_PROOF_INTERVAL_S = 3600.0
DEFAULT_PROOF_SHARE = 0.25
DEFAULT_PROOF_SCALE = 1.0
MIN_PROOF_INTERVAL_S = 1.0
MAX_PROOF_INTERVAL_S = 7 * 86400.0
SMTP_SECURITY = ("starttls", "tls", "none")

ENV_ADMIN_TOKEN = "FLEETSCOPE_ADMIN_TOKEN"
ENV_SMTP_PASSWORD = "FLEETSCOPE_SMTP_PASSWORD"


@dataclass(frozen=True)
class CollectorSettings:
    """Everything the collector is configured with; checked on construction."""

    dsn: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    admin_token: str | None = field(default=None, repr=False)  # never in a log line
    spool_dir: Path | None = None
    collector_id: str = ""  # "" -> f"{hostname}:{port}"
    shard: tuple[int, int] = (0, 1)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    max_series_per_node: int = DEFAULT_MAX_SERIES_PER_NODE
    max_label_len: int = DEFAULT_MAX_LABEL_LEN
    push_min_interval_s: float = DEFAULT_PUSH_MIN_INTERVAL_S
    push_cache_nodes: int = DEFAULT_PUSH_CACHE_NODES
    token_cache_s: float = DEFAULT_TOKEN_CACHE_S
    db_pool_size: int = DEFAULT_DB_POOL_SIZE
    db_timeout_s: float = DEFAULT_DB_TIMEOUT_S
    scrape_enabled: bool = True
    scrape_concurrency: int = DEFAULT_SCRAPE_CONCURRENCY
    scrape_timeout_s: float = DEFAULT_SCRAPE_TIMEOUT_S
    # Scrape targets and webhooks on loopback, private, link-local or metadata
    # addresses (issue 15, collector/addresses.py): refused unless this is set.
    allow_private_targets: bool = False
    alerts_enabled: bool = True
    alert_eval_s: float = DEFAULT_ALERT_EVAL_S
    alert_flap_window_s: float = DEFAULT_ALERT_FLAP_WINDOW_S
    alert_timeout_s: float = DEFAULT_ALERT_TIMEOUT_S
    alert_max_attempts: int = DEFAULT_ALERT_MAX_ATTEMPTS
    alert_retry_base_s: float = DEFAULT_ALERT_RETRY_BASE_S
    smtp_host: str | None = None
    smtp_port: int = DEFAULT_SMTP_PORT
    smtp_security: str = "starttls"
    smtp_from: str | None = None
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    integrity_interval_s: float = DEFAULT_INTEGRITY_INTERVAL_S
    publish_interval_s: int = DEFAULT_PUBLISH_INTERVAL_S
    bundle_dir: Path | None = None
    proof_enabled: bool = True
    proof_interval_s: float = DEFAULT_PROOF_INTERVAL_S
    proof_share: float = DEFAULT_PROOF_SHARE
    proof_scale: float = DEFAULT_PROOF_SCALE

    def __post_init__(self) -> None:
        if not self.dsn:
            raise FleetscopeError("--dsn / FLEETSCOPE_DSN: a DSN is required")
        if not self.host:
            raise FleetscopeError("--host / FLEETSCOPE_COLLECTOR_HOST must not be empty")
        _in_range("--port / FLEETSCOPE_COLLECTOR_PORT", self.port, 0, 65535)
        if self.admin_token is not None and len(self.admin_token) < MIN_ADMIN_TOKEN_LEN:
            raise FleetscopeError(f"{ENV_ADMIN_TOKEN} must be at least {MIN_ADMIN_TOKEN_LEN} characters")
        index, count = self.shard
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise FleetscopeError(f"--shard / FLEETSCOPE_SHARD: {index}/{count} is not i/N with 0 <= i < N")
        _in_range("--max-body-bytes / FLEETSCOPE_MAX_BODY_BYTES", self.max_body_bytes, 1024, 2**31)
        _in_range("--max-decompressed-bytes / FLEETSCOPE_MAX_DECOMPRESSED_BYTES",
                  self.max_decompressed_bytes, 1024, 2**31)
        _in_range("--max-json-bytes / FLEETSCOPE_MAX_JSON_BYTES", self.max_json_bytes, 1024, 2**24)
        _in_range("--max-series-per-node / FLEETSCOPE_MAX_SERIES_PER_NODE", self.max_series_per_node, 1, 10**6)
        _in_range("--max-label-len / FLEETSCOPE_MAX_LABEL_LEN", self.max_label_len, 16, 65536)
        _in_range("--push-min-interval-s / FLEETSCOPE_PUSH_MIN_INTERVAL_S", self.push_min_interval_s, 0, 3600)
        _in_range("--push-cache-nodes / FLEETSCOPE_PUSH_CACHE_NODES", self.push_cache_nodes, 1, 10**7)
        _in_range("--token-cache-s / FLEETSCOPE_TOKEN_CACHE_S", self.token_cache_s, 0, 3600)
        _in_range("--db-pool-size / FLEETSCOPE_DB_POOL_SIZE", self.db_pool_size, 1, 1000)
        _in_range("--db-timeout-s / FLEETSCOPE_DB_TIMEOUT_S", self.db_timeout_s, 0.1, 600)
        _in_range("--scrape-concurrency / FLEETSCOPE_SCRAPE_CONCURRENCY", self.scrape_concurrency, 1, 100_000)
        _in_range("--scrape-timeout-s / FLEETSCOPE_SCRAPE_TIMEOUT_S", self.scrape_timeout_s, 0.1, 600)
        _in_range("--alert-eval-s / FLEETSCOPE_ALERT_EVAL_S", self.alert_eval_s, 0.05, 600)
        _in_range("--alert-flap-window-s / FLEETSCOPE_ALERT_FLAP_WINDOW_S", self.alert_flap_window_s, 1, 7 * 86400)
        _in_range("--alert-timeout-s / FLEETSCOPE_ALERT_TIMEOUT_S", self.alert_timeout_s, 0.1, 300)
        _in_range("--alert-max-attempts / FLEETSCOPE_ALERT_MAX_ATTEMPTS", self.alert_max_attempts, 1, 100)
        _in_range("--alert-retry-base-s / FLEETSCOPE_ALERT_RETRY_BASE_S", self.alert_retry_base_s, 0.01, 3600)
        _in_range("--smtp-port / FLEETSCOPE_SMTP_PORT", self.smtp_port, 1, 65535)
        if self.smtp_security not in SMTP_SECURITY:
            raise FleetscopeError(f"--smtp-security / FLEETSCOPE_SMTP_SECURITY={self.smtp_security!r} "
                                  f"must be one of {', '.join(SMTP_SECURITY)}")
        if self.smtp_host and not self.smtp_from:
            raise FleetscopeError("--smtp-from / FLEETSCOPE_SMTP_FROM is required with FLEETSCOPE_SMTP_HOST "
                                  "(the sender address of alert emails)")
        if self.smtp_from and ("@" not in self.smtp_from or any(c.isspace() for c in self.smtp_from.strip())):
            raise FleetscopeError(f"--smtp-from / FLEETSCOPE_SMTP_FROM={self.smtp_from!r} is not an email address")
        if self.smtp_password and not self.smtp_user:
            raise FleetscopeError(f"{ENV_SMTP_PASSWORD} is set but --smtp-user / FLEETSCOPE_SMTP_USER is not")
        _in_range("--integrity-interval-s / FLEETSCOPE_INTEGRITY_INTERVAL_S", self.integrity_interval_s, 0, 86400)
        if self.publish_interval_s != 0:
            _in_range("--publish-interval-s / FLEETSCOPE_PUBLISH_INTERVAL_S", self.publish_interval_s, 60, 86400)
        _in_range("--proof-interval-s / FLEETSCOPE_PROOF_INTERVAL_S", self.proof_interval_s,
                  MIN_PROOF_INTERVAL_S, MAX_PROOF_INTERVAL_S)
        _in_open_closed("--proof-share / FLEETSCOPE_PROOF_SHARE", self.proof_share, 0, 1)
        # Above 1 no honest GPU could pass; 0 would size every proof at zero work.
        _in_open_closed("--proof-scale / FLEETSCOPE_PROOF_SCALE", self.proof_scale, 0, 1)
        if not self.collector_id:
            # object.__setattr__: the one derived field of a frozen dataclass.
            object.__setattr__(self, "collector_id", f"{socket.gethostname()}:{self.port}")
        if len(self.collector_id) > 200:
            raise FleetscopeError("--collector-id / FLEETSCOPE_COLLECTOR_ID must be at most 200 characters")
        if self.spool_dir is None:
            from fleetscope.config import default_data_dir

            object.__setattr__(self, "spool_dir", default_data_dir() / "collector-spool")
        if self.bundle_dir is None:
            from fleetscope.config import default_data_dir

            object.__setattr__(self, "bundle_dir", default_data_dir() / "bundles")

    @property
    def shard_text(self) -> str:
        return f"{self.shard[0]}/{self.shard[1]}"


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise FleetscopeError(f"{name}={value!r} is out of range [{lo}, {hi}]")


def _in_open_closed(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo < value <= hi:
        raise FleetscopeError(f"{name}={value!r} is out of range ({lo}, {hi}]")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` as (i, N) with 0 <= i < N; FleetscopeError naming --shard otherwise."""
    index, sep, count = text.strip().partition("/")
    try:
        shard = (int(index), int(count)) if sep else None
    except ValueError:
        shard = None
    if shard is None or not 0 <= shard[0] < shard[1]:
        raise FleetscopeError(f"--shard / FLEETSCOPE_SHARD={text!r} is not i/N with 0 <= i < N (e.g. 0/3)")
    return shard


# (flag, dest, environment variable, type, help). One table so the flags, the
# environment names and docs/collector.md cannot drift apart.
_OPTIONS: tuple[tuple[str, str, str, type, str], ...] = (
    ("--host", "host", "FLEETSCOPE_COLLECTOR_HOST", str, f"address to listen on (default {DEFAULT_HOST})"),
    ("--port", "port", "FLEETSCOPE_COLLECTOR_PORT", int, f"port to listen on (default {DEFAULT_PORT})"),
    ("--shard", "shard", "FLEETSCOPE_SHARD", str, "scrape only shard i of N, as i/N (default 0/1)"),
    ("--collector-id", "collector_id", "FLEETSCOPE_COLLECTOR_ID", str, "this replica's id (default host:port)"),
    ("--spool-dir", "spool_dir", "FLEETSCOPE_SPOOL_DIR", Path, "the writer's spool for when the database is down"),
    ("--max-body-bytes", "max_body_bytes", "FLEETSCOPE_MAX_BODY_BYTES", int,
     f"largest request body as sent (default {DEFAULT_MAX_BODY_BYTES})"),
    ("--max-decompressed-bytes", "max_decompressed_bytes", "FLEETSCOPE_MAX_DECOMPRESSED_BYTES", int,
     f"largest push body after gunzip (default {DEFAULT_MAX_DECOMPRESSED_BYTES})"),
    ("--max-json-bytes", "max_json_bytes", "FLEETSCOPE_MAX_JSON_BYTES", int,
     f"largest JSON API body (default {DEFAULT_MAX_JSON_BYTES})"),
    ("--max-series-per-node", "max_series_per_node", "FLEETSCOPE_MAX_SERIES_PER_NODE", int,
     f"most series in one payload (default {DEFAULT_MAX_SERIES_PER_NODE})"),
    ("--max-label-len", "max_label_len", "FLEETSCOPE_MAX_LABEL_LEN", int,
     f"longest label value kept (default {DEFAULT_MAX_LABEL_LEN})"),
    ("--push-min-interval-s", "push_min_interval_s", "FLEETSCOPE_PUSH_MIN_INTERVAL_S", float,
     f"floor of the per-node push spacing max(this, interval/2) (default {DEFAULT_PUSH_MIN_INTERVAL_S})"),
    ("--push-cache-nodes", "push_cache_nodes", "FLEETSCOPE_PUSH_CACHE_NODES", int,
     f"pushing nodes whose parse caches are kept (default {DEFAULT_PUSH_CACHE_NODES})"),
    ("--token-cache-s", "token_cache_s", "FLEETSCOPE_TOKEN_CACHE_S", float,
     f"seconds a token lookup is reused (default {DEFAULT_TOKEN_CACHE_S:g})"),
    ("--db-pool-size", "db_pool_size", "FLEETSCOPE_DB_POOL_SIZE", int,
     f"database connections for the API (default {DEFAULT_DB_POOL_SIZE})"),
    ("--db-timeout-s", "db_timeout_s", "FLEETSCOPE_DB_TIMEOUT_S", float,
     f"wait for a database connection before 503 (default {DEFAULT_DB_TIMEOUT_S:g})"),
    ("--scrape-concurrency", "scrape_concurrency", "FLEETSCOPE_SCRAPE_CONCURRENCY", int,
     f"scrapes in flight at once (default {DEFAULT_SCRAPE_CONCURRENCY})"),
    ("--scrape-timeout-s", "scrape_timeout_s", "FLEETSCOPE_SCRAPE_TIMEOUT_S", float,
     f"one scrape's time limit (default {DEFAULT_SCRAPE_TIMEOUT_S:g})"),
    ("--alert-eval-s", "alert_eval_s", "FLEETSCOPE_ALERT_EVAL_S", float,
     f"seconds between alert evaluations (default {DEFAULT_ALERT_EVAL_S:g})"),
    ("--alert-flap-window-s", "alert_flap_window_s", "FLEETSCOPE_ALERT_FLAP_WINDOW_S", float,
     f"flap damping window per node (default {DEFAULT_ALERT_FLAP_WINDOW_S:g})"),
    ("--alert-timeout-s", "alert_timeout_s", "FLEETSCOPE_ALERT_TIMEOUT_S", float,
     f"one alert delivery attempt's time limit (default {DEFAULT_ALERT_TIMEOUT_S:g})"),
    ("--alert-max-attempts", "alert_max_attempts", "FLEETSCOPE_ALERT_MAX_ATTEMPTS", int,
     f"delivery attempts per message before giving up (default {DEFAULT_ALERT_MAX_ATTEMPTS})"),
    ("--alert-retry-base-s", "alert_retry_base_s", "FLEETSCOPE_ALERT_RETRY_BASE_S", float,
     f"first retry delay, doubled each attempt (default {DEFAULT_ALERT_RETRY_BASE_S:g})"),
    ("--smtp-host", "smtp_host", "FLEETSCOPE_SMTP_HOST", str, "SMTP server for email alerts (default: none)"),
    ("--smtp-port", "smtp_port", "FLEETSCOPE_SMTP_PORT", int, f"SMTP port (default {DEFAULT_SMTP_PORT})"),
    ("--smtp-security", "smtp_security", "FLEETSCOPE_SMTP_SECURITY", str,
     "starttls, tls or none (default starttls)"),
    ("--smtp-from", "smtp_from", "FLEETSCOPE_SMTP_FROM", str, "sender address of alert emails"),
    ("--smtp-user", "smtp_user", "FLEETSCOPE_SMTP_USER", str,
     f"SMTP login (the password comes only from {ENV_SMTP_PASSWORD})"),
    ("--integrity-interval-s", "integrity_interval_s", "FLEETSCOPE_INTEGRITY_INTERVAL_S", float,
     f"seconds between integrity check runs, 0 for none (default {DEFAULT_INTEGRITY_INTERVAL_S:g})"),
    ("--publish-interval-s", "publish_interval_s", "FLEETSCOPE_PUBLISH_INTERVAL_S", int,
     f"seconds between published snapshots, 0 for none (default {DEFAULT_PUBLISH_INTERVAL_S})"),
    ("--bundle-dir", "bundle_dir", "FLEETSCOPE_BUNDLE_DIR", Path, "where published data bundles are written"),
    ("--proof-interval-s", "proof_interval_s", "FLEETSCOPE_PROOF_INTERVAL_S", float,
     f"mean seconds between proof-of-GPU rounds, each gap uniform in 0.5-1.5 x this "
     f"(default {DEFAULT_PROOF_INTERVAL_S:g})"),
    ("--proof-share", "proof_share", "FLEETSCOPE_PROOF_SHARE", float,
     f"share of the waiting nodes challenged per round, in (0, 1] (default {DEFAULT_PROOF_SHARE:g})"),
    ("--proof-scale", "proof_scale", "FLEETSCOPE_PROOF_SCALE", float,
     f"proof work as a share of the datasheet throughput, in (0, 1]; tiny for CPU demos "
     f"(default {DEFAULT_PROOF_SCALE:g})"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the collector's flags to ``parser`` (``fleetscope collector``).

    Defaults are None so that ``from_args`` can tell a flag from its
    environment variable. ``--dsn`` is added only if the parser lacks it.
    """
    if not any("--dsn" in action.option_strings for action in parser._actions):
        parser.add_argument("--dsn", help="PostgreSQL DSN (default: $FLEETSCOPE_DSN, else the embedded server)")
    for flag, dest, env, _kind, help_text in _OPTIONS:
        parser.add_argument(flag, dest=dest, default=None, metavar=dest.upper() if flag != "--shard" else "I/N",
                            help=f"{help_text}; env {env}")
    parser.add_argument("--no-scrape", dest="scrape_enabled", action="store_false", default=None,
                        help="receive pushes only; scrape nobody (env FLEETSCOPE_SCRAPE=0)")
    parser.add_argument("--no-alerts", dest="alerts_enabled", action="store_false", default=None,
                        help="evaluate and send no offline alerts (env FLEETSCOPE_ALERTS=0)")
    parser.add_argument("--no-proof", dest="proof_enabled", action="store_false", default=None,
                        help="open no proof-of-GPU rounds (env FLEETSCOPE_PROOF=0)")


def from_args(args: argparse.Namespace, *, environ: Mapping[str, str] | None = None,
              resolve_dsn: bool = True) -> CollectorSettings:
    """Settings from parsed flags, then the environment, then the defaults.

    With ``resolve_dsn`` the DSN follows the contract's rule (``--dsn``, then
    FLEETSCOPE_DSN, then the embedded server, started if need be).
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for flag, dest, env_name, kind, _help in _OPTIONS:
        raw = getattr(args, dest, None)
        source = flag
        if raw is None:  # an empty flag is a value (and refused); an empty variable is unset
            raw = env.get(env_name) or None
            source = env_name
        if raw is None:
            continue
        if dest == "shard":
            values[dest] = parse_shard(str(raw))
            continue
        try:
            values[dest] = kind(raw)
        except (TypeError, ValueError):
            raise FleetscopeError(f"{source}={raw!r} is not a valid {kind.__name__}") from None
    scrape = getattr(args, "scrape_enabled", None)
    if scrape is None:
        scrape = _env_bool(env, "FLEETSCOPE_SCRAPE", True)
    values["scrape_enabled"] = scrape
    alerts = getattr(args, "alerts_enabled", None)
    if alerts is None:
        alerts = _env_bool(env, "FLEETSCOPE_ALERTS", True)
    values["alerts_enabled"] = alerts
    values["allow_private_targets"] = _env_bool(env, "FLEETSCOPE_ALLOW_PRIVATE_TARGETS", False)
    proof = getattr(args, "proof_enabled", None)
    if proof is None:
        proof = _env_bool(env, "FLEETSCOPE_PROOF", True)
    values["proof_enabled"] = proof
    values["admin_token"] = env.get(ENV_ADMIN_TOKEN) or None
    values["smtp_password"] = env.get(ENV_SMTP_PASSWORD) or None
    dsn = getattr(args, "dsn", None)
    if resolve_dsn:
        from fleetscope.db import resolve_dsn as resolve

        dsn = resolve(dsn)
    else:
        dsn = dsn or env.get("FLEETSCOPE_DSN") or ""
    return CollectorSettings(dsn=dsn, **values)  # type: ignore[arg-type]


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """healthchecks' envbool: only the usual spellings, anything else stops start-up."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise FleetscopeError(f"{name}={raw!r} must be one of 1/0, true/false, yes/no, on/off")
