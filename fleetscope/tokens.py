"""Operator and node tokens: random, shown once, stored as SHA-256.

Tokens carry 256 bits from the OS's CSPRNG, so a fast hash is enough (there
is no dictionary to attack) and lets the database find a token by its hash
through a unique index. The final comparison is constant-time anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32
PREFIXES = {"operator": "fso_", "node": "fsn_"}  # tells a leaked token's kind at a glance


def new_token(kind: str) -> str:
    """A new token of ``kind`` ('operator' or 'node')."""
    return PREFIXES[kind] + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).digest()


def matches(token: str, stored: bytes) -> bool:
    """Whether ``token`` is the one stored as ``stored``, in constant time."""
    return hmac.compare_digest(token_hash(token), stored)
