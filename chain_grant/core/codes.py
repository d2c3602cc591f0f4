"""Authorization codes as chain_grant handles them: digests, never the code."""

from __future__ import annotations

import secrets

from ..client.jose import sha256_hex


def code_digest(code: str) -> str:
    """How a code is stored and looked up in chain_grant's tables (SHA-256 hex)."""
    return sha256_hex(code)


def plausible_code(code: str) -> bool:
    """Could this be a code DOT stored? (Printable ASCII, ≤ 255 characters.) Checked
    before querying DOT's table, where a NUL byte would be a database error."""
    return 0 < len(code) <= 255 and code.isascii() and code.isprintable()


def new_code() -> str:
    """A fresh authorization code: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)
