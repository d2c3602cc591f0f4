"""JOSE helpers shared by agents and the IdP: base64url, digests, ``c_hash``,
did:jwk, and JSON as proofs may carry it. Standard library and jwcrypto only."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

DID_JWK_PREFIX = "did:jwk:"
JWK_THUMBPRINT_URI = "urn:ietf:params:oauth:jwk-thumbprint:sha-256:"
MAX_JSON_DEPTH = 32
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256_hex(value: str | bytes) -> str:
    """SHA-256 hex digest; how codes, tokens and proofs are stored and compared."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return hashlib.sha256(value).hexdigest()


def token_hash(token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of SHA-256 of a token's ASCII. DPoP proofs and
    RFC 8693 actor tokens name the token they go with by it."""
    return b64url(hashlib.sha256(token.encode("utf-8")).digest())


def code_hash(code: str) -> str:
    """OIDC-style ``c_hash``: base64url of the left half of SHA-256(code)."""
    digest = hashlib.sha256(code.encode("utf-8")).digest()  # codes are ASCII; never raise on others
    return b64url(digest[: len(digest) // 2])


def did_jwk(public_jwk: dict[str, Any]) -> str:
    """The did:jwk identifier of a public key (members sorted, as a stable form)."""
    return DID_JWK_PREFIX + b64url(json.dumps(public_jwk, sort_keys=True, separators=(",", ":")).encode())


def did_jwk_text(did: str) -> str:
    """The JSON a did:jwk carries. Its method-specific id is base64url and nothing else:
    Python's decoder would skip other characters, giving one key many spellings."""
    encoded = did[len(DID_JWK_PREFIX) :] if did.startswith(DID_JWK_PREFIX) else ""
    if not _BASE64URL.fullmatch(encoded):
        raise ValueError("not a did:jwk (base64url)")
    return b64url_decode(encoded).decode("utf-8")


def _no_floats(value: str):
    raise ValueError(f"floating-point number {value!r}")


def _check_storable(value: Any, depth: int = 0) -> None:
    """Refuse what json.loads accepts but the chain cannot store or hash: lone UTF-16
    surrogates ("\\ud800" is not UTF-8) and nesting deeper than MAX_JSON_DEPTH (the
    encoders would hit the recursion limit)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError("JSON nested too deeply")
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            _check_storable(item, depth + 1)


def strict_json(text: str) -> Any:
    """JSON as proofs may carry it: no NUL (databases refuse it), no floats or
    NaN/Infinity (jsonb rewrites floats, which would break the chain's link_hash), no
    lone surrogates and no deep nesting (not storable). Raises ValueError (or
    RecursionError for pathological nesting inside json.loads)."""
    if "\x00" in text or "\\u0000" in text:
        raise ValueError("NUL character")
    value = json.loads(text, parse_float=_no_floats, parse_constant=_no_floats)
    _check_storable(value)
    return value
