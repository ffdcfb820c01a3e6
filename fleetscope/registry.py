"""Operators and nodes: creating them, and the statements that find them by token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from fleetscope import states, tokens
from fleetscope.errors import FleetscopeError

if TYPE_CHECKING:
    from datetime import datetime


# The statements, shared with the collector's async handlers (collector/auth.py,
# collector/registration.py): one place says how a node is created and how a
# token finds its owner.
REGISTER_NODE_SQL = (
    "INSERT INTO nodes (operator_id, name, scrape_url, interval_s, grace_s, token_hash, registered_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s, now())) RETURNING node_id"
)
# Pausing a node (issue 16), scoped by operator: another operator's node is
# "not found", as a node that does not exist. What a pause means is
# ``set_paused``'s docstring (shown on /methodology).
SET_PAUSED_SQL = """
UPDATE nodes
   SET paused = %(paused)s,
       alert_after = CASE WHEN %(paused)s OR last_ok_at IS NULL THEN NULL
                          ELSE last_ok_at + make_interval(secs => grace_s) END
 WHERE node_id = %(node_id)s AND operator_id = %(operator_id)s
RETURNING node_id, name, paused
"""
OPERATOR_BY_TOKEN_SQL = "SELECT operator_id, token_hash FROM operators WHERE token_hash = %s"
NODE_BY_TOKEN_SQL = "SELECT node_id, token_hash, interval_s FROM nodes WHERE token_hash = %s"


@dataclass(frozen=True)
class NewNode:
    node_id: int
    node_token: str  # shown once; only its hash is stored


def create_operator(conn: psycopg.Connection, name: str) -> tuple[int, str]:
    """Create operator ``name``; return (operator_id, token). The token is shown once."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise FleetscopeError("an operator name must be 1 to 200 characters")
    token = tokens.new_token("operator")
    try:
        with conn.transaction():
            row = conn.execute("INSERT INTO operators (name, token_hash) VALUES (%s, %s) RETURNING operator_id",
                               (name, tokens.token_hash(token))).fetchone()
    except psycopg.errors.UniqueViolation:
        raise FleetscopeError(f"an operator named {name!r} already exists") from None
    return row[0], token


def operator_for_token(conn: psycopg.Connection, token: str) -> int | None:
    """The operator_id whose token this is, or None."""
    row = conn.execute(OPERATOR_BY_TOKEN_SQL, (tokens.token_hash(token),)).fetchone()
    return row[0] if row and tokens.matches(token, row[1]) else None


def register_node(conn: psycopg.Connection, *, operator_id: int, name: str, scrape_url: str | None = None,
                  interval_s: int = states.DEFAULT_INTERVAL_S, grace_s: int | None = None,
                  registered_at: datetime | None = None) -> NewNode:
    """Register a node for ``operator_id``; return its id and its token (shown once)."""
    token = tokens.new_token("node")
    grace = grace_s if grace_s is not None else states.default_grace_s(interval_s)
    if not (5 <= interval_s <= 3600 and 3600 % interval_s == 0):
        raise FleetscopeError(f"interval_s={interval_s}: the interval must be 5 to 3600 s and divide an hour")
    if not interval_s <= grace <= 86400:
        raise FleetscopeError(f"grace_s={grace}: the grace period must be between the interval and 86400 s")
    with conn.transaction():
        row = conn.execute(REGISTER_NODE_SQL, (operator_id, name, scrape_url, interval_s, grace,
                                               tokens.token_hash(token), registered_at)).fetchone()
    return NewNode(node_id=row[0], node_token=token)


def set_paused(conn: psycopg.Connection, *, operator_id: int, node_id: int, paused: bool) -> bool:
    """Pause or resume ``node_id`` of ``operator_id``; False when the operator has no such node.

    A pause silences the node's alerts and nothing else. A paused node gets no
    alert deadline (collector/alerts.py): going down, coming back or flapping
    sends no message, though its alert state is still kept. Every public
    number ignores the flag: a paused node that does not report is offline in
    the counts, and its uptime and reputation count those slots as down, as
    for any node, so a pause can never hide downtime. Pages show the flag
    beside the state ("down · paused"). Resuming sets the deadline from the
    node's latest report again: a node that is down when resumed and had not
    been announced as down is announced at the next evaluation round.
    """
    with conn.transaction():
        row = conn.execute(SET_PAUSED_SQL, {"paused": paused, "node_id": node_id,
                                            "operator_id": operator_id}).fetchone()
    return row is not None


def rotate_node_token(conn: psycopg.Connection, node_id: int) -> str:
    """A new token for ``node_id`` (the old one stops working); returns it, shown once.

    The demo gives its simulated hosts fresh tokens at each start, since
    tokens are stored hashed and the last run's are gone.
    """
    token = tokens.new_token("node")
    if conn.execute("UPDATE nodes SET token_hash = %s WHERE node_id = %s",
                    (tokens.token_hash(token), node_id)).rowcount != 1:
        raise FleetscopeError(f"no node {node_id}")
    return token

