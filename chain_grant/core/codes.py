"""Authorization codes as chain_grant handles them: digests, never the code."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.utils.crypto import salted_hmac

from ..client.jose import b64url, sha256_hex
from ..settings import chain_grant_settings


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


def derive_code(step_id) -> str:
    """The code of a step, re-derivable from its id under the server's key (HMAC-SHA256,
    256 bits, URL-safe), so an identical retried hop can be answered with the same
    code without the code being stored anywhere. ``CODE_KEY`` (default: SECRET_KEY)."""
    key = chain_grant_settings.CODE_KEY or settings.SECRET_KEY
    return b64url(salted_hmac("chain_grant.step-code", str(step_id), secret=key, algorithm="sha256").digest())
