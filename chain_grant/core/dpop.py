"""DPoP proofs (RFC 9449 §4.3): what the token endpoint and a resource server check
before a code or token is bound to (or used with) the key a proof names.

No maintained Python package verifies DPoP on the server side, so this is jwcrypto
plus the RFC's checks, each one a negative test (tests/test_dpop.py)."""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.utils import timezone
from jwcrypto import jwk
from jwcrypto.common import JWException

from ..client.jose import b64url, sha256_hex, token_hash
from ..models import DPoPBinding
from ..settings import chain_grant_settings
from . import proofs
from .errors import ChainError
from .replay import use_once

INVALID = "invalid_dpop_proof"
USE_NONCE = "use_dpop_nonce"


@dataclass(frozen=True)
class DPoPKey:
    jkt: str  # RFC 7638 thumbprint (base64url SHA-256) of the proof's public key
    jwk: dict[str, Any]


def normalised_url(url: str) -> str:
    """``htu`` as RFC 9449 §4.3 compares it: no query or fragment, scheme and host
    lower-cased, the default port dropped."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path or '/'}"


def verify_proof(
    proof: Any,
    *,
    htm: str,
    htu: str,
    access_token: str | None = None,
    nonces: tuple[str, ...] | None = None,
    now: float | None = None,
) -> DPoPKey:
    """Check one DPoP proof for a request (``htm`` method, ``htu`` URL); with
    ``access_token``, its ``ath``; with ``nonces``, that the proof carries one of them. Records
    its ``jti`` (single use on every replica). ChainError: ``invalid_dpop_proof``, or
    ``use_dpop_nonce`` when the server's nonce is missing or stale."""
    if not isinstance(proof, str) or not proof:
        raise ChainError("A DPoP proof is required.", INVALID)
    if "," in proof:  # two DPoP headers, joined by the WSGI server (a compact JWS has no comma)
        raise ChainError("Exactly one DPoP header is allowed.", INVALID)
    try:
        header, claims = proofs.parse_compact(proof)
    except ChainError:
        raise ChainError("The DPoP proof is not a compact JWS.", INVALID) from None
    if header.get("typ") != "dpop+jwt":
        raise ChainError("The DPoP proof's typ must be dpop+jwt.", INVALID)
    try:
        alg = proofs.check_algorithm(header.get("alg"), chain_grant_settings.DPOP_ALGORITHMS)
    except ChainError:
        raise ChainError("The DPoP proof's alg is not allowed.", INVALID) from None
    public = header.get("jwk")
    try:
        key = jwk.JWK(**public) if isinstance(public, dict) and isinstance(public.get("kty"), str) else None
        thumbprint = key.thumbprint() if key is not None else ""
    except (TypeError, ValueError, KeyError, AttributeError, JWException):
        key = None
    if key is None or key.has_private or key.get("kty") == "oct":
        raise ChainError("The DPoP proof's jwk must be a public asymmetric key.", INVALID)
    try:
        proofs.verify_signature(proof, key.export_public(as_dict=True), alg)
    except ChainError:
        raise ChainError("The DPoP proof's signature is invalid.", INVALID) from None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise ChainError("The DPoP proof has no jti.", INVALID)
    if claims.get("htm") != htm:
        raise ChainError("The DPoP proof's htm is not this request's method.", INVALID)
    htu_claim = claims.get("htu")
    try:  # urlsplit and .port raise ValueError on a URL such as "http://[x/" or ":99999"
        same_url = isinstance(htu_claim, str) and normalised_url(htu_claim) == normalised_url(htu)
    except ValueError:
        same_url = False
    if not same_url:
        raise ChainError("The DPoP proof's htu is not this request's URL.", INVALID)
    now = time.time() if now is None else now
    iat = claims.get("iat")
    window, skew = chain_grant_settings.DPOP_PROOF_WINDOW, chain_grant_settings.PROOF_CLOCK_SKEW
    if isinstance(iat, bool) or not isinstance(iat, int) or iat > now + skew or iat < now - window - skew:
        raise ChainError("The DPoP proof's iat is outside the accepted window.", INVALID)
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(ath, token_hash(access_token)):
            raise ChainError("The DPoP proof's ath does not match the access token.", INVALID)
    if nonces is not None and claims.get("nonce") not in nonces:
        raise ChainError("The server requires a fresh DPoP nonce.", USE_NONCE)
    try:
        use_once("dpop", thumbprint, jti, iat + window, skew)
    except ChainError:
        raise ChainError("The DPoP proof was already used (jti).", INVALID) from None
    return DPoPKey(thumbprint, key.export_public(as_dict=True))


def nonces(now: float | None = None) -> tuple[str, ...] | None:
    """The server's current DPoP nonces (RFC 9449 §8) when ``DPOP_NONCE_SECONDS`` is
    set, else None: an HMAC of the time window under SECRET_KEY-derived CODE_KEY, so
    every replica computes the same ones without storing any; the previous window's
    nonce is still accepted. The first is the one to hand out."""
    seconds = chain_grant_settings.DPOP_NONCE_SECONDS
    if not seconds:
        return None
    window = int((time.time() if now is None else now) // seconds)
    return tuple(_nonce(w) for w in (window, window - 1))


def _nonce(window: int) -> str:
    from django.conf import settings

    key = (chain_grant_settings.CODE_KEY or str(settings.SECRET_KEY)).encode()
    return b64url(hmac.new(key, f"dpop-nonce:{window}".encode(), "sha256").digest()[:18])


# --- bindings -------------------------------------------------------------------------


def bind_tokens(token: dict[str, Any], jkt: str, *, public: bool) -> None:
    """Bind a token response's access token (and, for a public client, its refresh
    token: RFC 9449 §5) to the key ``jkt``."""
    now = timezone.now()
    rows = [
        DPoPBinding(
            kind=DPoPBinding.Kind.ACCESS,
            token_checksum=sha256_hex(token["access_token"]),
            jkt=jkt,
            expires=now + timedelta(seconds=int(token.get("expires_in") or 3600)),
        )
    ]
    if public and token.get("refresh_token"):
        rows.append(
            DPoPBinding(
                kind=DPoPBinding.Kind.REFRESH,
                token_checksum=sha256_hex(token["refresh_token"]),
                jkt=jkt,
                expires=now + timedelta(days=365),
            )
        )
    DPoPBinding.objects.bulk_create(rows)


def bound_key(token_value: str, kind: str = "access") -> str:
    """The thumbprint a token is bound to ("" if it is a bearer token)."""
    row = DPoPBinding.objects.filter(token_checksum=sha256_hex(token_value), kind=kind).values_list("jkt", flat=True)
    return row.first() or ""


_JKT = re.compile(r"[A-Za-z0-9_-]{43}")


def check_jkt(value: Any, count: int = 1) -> None:
    """``dpop_jkt`` at authorize: one, a base64url SHA-256 thumbprint (RFC 9449 §10)."""
    if count > 1:
        raise ChainError("Duplicate dpop_jkt parameter.", "invalid_request")
    if not isinstance(value, str) or not _JKT.fullmatch(value):
        raise ChainError("dpop_jkt must be a JWK SHA-256 thumbprint (43 base64url characters).", "invalid_request")


def bind_code(code: str, jkt: str) -> None:
    """Bind a DOT code issued at authorize with ``dpop_jkt``: its exchange needs a proof
    by that key. Kept for the code's lifetime (DOT's AUTHORIZATION_CODE_EXPIRE_SECONDS)."""
    from oauth2_provider.settings import oauth2_settings

    lifetime = timedelta(seconds=oauth2_settings.AUTHORIZATION_CODE_EXPIRE_SECONDS)
    DPoPBinding.objects.create(
        kind=DPoPBinding.Kind.CODE, token_checksum=sha256_hex(code), jkt=jkt, expires=timezone.now() + lifetime
    )
