"""PKCE (RFC 7636) for the agent that makes a hop: only it can exchange its code."""

from __future__ import annotations

import hashlib
import secrets

from .jose import b64url


def s256(verifier: str) -> str:
    """The S256 code_challenge of a code_verifier (RFC 7636 §4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)
