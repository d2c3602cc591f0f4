"""PKCE (RFC 7636) for the agent that makes a hop: only it can exchange its code."""

from __future__ import annotations

import hashlib
import secrets

from .jose import b64url


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())
