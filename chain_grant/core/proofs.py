"""Verification of the signed proofs that advance a chain (plain functions, no HTTP).

An agent proves a hop with a compact JWS ("id_token") signed by one of its
*registered* keys. Everything here raises :class:`ProofError` (an ``invalid_grant``
or ``invalid_request``) with a description safe to show to the client.
"""

from __future__ import annotations

import binascii
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from ..client.jose import (
    DID_JWK_PREFIX,
    JWK_THUMBPRINT_URI,
    b64url_decode,
    code_hash,
    did_jwk,
    did_jwk_text,
    sha256_hex,
    strict_json,
    token_hash,
)
from ..settings import chain_grant_settings
from .errors import ChainError

log = logging.getLogger("chain_grant")

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")  # empty signature: alg none


class ProofError(ChainError):
    """A proof was refused (``invalid_grant``, or ``invalid_request`` if malformed)."""


@dataclass
class VerifiedProof:
    """What a verified proof tells: who signed it, the claims, and evidence to keep."""

    subject: str
    claims: dict[str, Any]
    digest: str
    jti: str = ""
    message_digest: str = ""
    key: Any = None  # AgentKey, or None for a self-asserted key
    thumbprint: str = ""  # RFC 7638 thumbprint of the signing key
    self_asserted_jwk: dict[str, Any] = field(default_factory=dict)


# --- keys ---------------------------------------------------------------------------


def load_public_keys(text: str) -> list[dict[str, Any]]:
    """Parse a public JWK, JWKS or PEM into a list of public JWK dicts with a ``kid``.

    Private keys and symmetric keys are refused: an agent's private key never
    belongs on the IdP.
    """
    text = text.strip()
    keys: list[jwk.JWK] = []
    try:
        if text.startswith("-----BEGIN"):
            if "PRIVATE KEY" in text.split("\n", 1)[0]:
                raise ValueError("refusing a private key: register the public key only")
            keys = [jwk.JWK.from_pem(text.encode())]
        else:
            data = json.loads(text)
            items = data["keys"] if isinstance(data, dict) and "keys" in data else [data]
            if not isinstance(items, list) or not all(isinstance(i, dict) and "kty" in i for i in items):
                raise ValueError("every key must be a JSON object with a kty")  # jwcrypto accepts {}
            keys = [jwk.JWK(**item) for item in items]
    except (ValueError, TypeError, KeyError, JWException) as exc:
        raise ValueError(f"not a public JWK, JWKS or PEM: {exc}") from exc
    if not keys:
        raise ValueError("no key found")
    result = []
    for key in keys:
        if key.get("kty") == "oct":
            raise ValueError("refusing a symmetric key: agent proofs must be asymmetric")
        if key.has_private:
            raise ValueError("refusing a private key: register the public key only")
        public = key.export_public(as_dict=True)
        public.setdefault("kid", key.thumbprint())
        result.append(public)
    return result


POC_PROOF_LIFETIME = 3600  # Boruta's PoC agents sign for exp = iat + 3600


def did_jwk_thumbprint(did: str) -> str | None:
    """RFC 7638 thumbprint of the key a did:jwk names (None if it is not one), so
    any member order or encoding of the same key matches."""
    try:
        return jwk.JWK(**strict_json(did_jwk_text(did))).thumbprint()
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, JWException):
        return None


# --- JWS parsing ----------------------------------------------------------------------


def parse_compact(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a compact JWS into (protected header, unverified payload), strictly."""
    if not token:
        raise ProofError("Missing proof.", "invalid_request")
    if len(token) > chain_grant_settings.PROOF_MAX_BYTES:
        raise ProofError("Proof is too large.", "invalid_request")
    if not _COMPACT_JWS.fullmatch(token):
        raise ProofError("Proof is not a compact JWS.", "invalid_request")
    header_b64, payload_b64, _ = token.split(".")
    try:
        header, payload = (strict_json(b64url_decode(part).decode("utf-8")) for part in (header_b64, payload_b64))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError) as exc:
        raise ProofError("Proof is not valid base64url JSON.", "invalid_request") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise ProofError("Proof header and payload must be JSON objects.", "invalid_request")
    return header, payload


def check_algorithm(alg: Any, agent_algorithms: list[str] | None = None) -> str:
    allowed = chain_grant_settings.allowed_algorithms
    if agent_algorithms:
        allowed &= set(agent_algorithms)
    if not isinstance(alg, str) or alg not in allowed:
        raise ProofError(f"Proof algorithm {alg!r} is not allowed.")
    return alg


def verify_signature(token: str, public_jwk: dict[str, Any], alg: str) -> None:
    try:
        key = jwk.JWK(**public_jwk)
        obj = jws.JWS()
        obj.deserialize(token)
        obj.verify(key, alg=alg)
    except (JWException, ValueError, TypeError) as exc:
        raise ProofError("Proof signature is invalid.") from exc


# --- claims ---------------------------------------------------------------------------


def int_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"Proof claim {name!r} is missing or not an integer.")
    return value


def check_times(claims: dict[str, Any], now: float | None = None, max_lifetime: int | None = None) -> None:
    now = time.time() if now is None else now
    max_lifetime = chain_grant_settings.MAX_PROOF_LIFETIME if max_lifetime is None else max_lifetime
    skew = chain_grant_settings.PROOF_CLOCK_SKEW
    iat, exp = int_claim(claims, "iat"), int_claim(claims, "exp")
    if iat > now + skew:
        raise ProofError("Proof was issued in the future (iat).")
    if exp <= now - skew:
        raise ProofError("Proof has expired (exp).")
    if exp - iat > max_lifetime:
        raise ProofError("Proof lifetime (exp - iat) is too long.")
    if "nbf" in claims and int_claim(claims, "nbf") > now + skew:
        raise ProofError("Proof is not valid yet (nbf).")


def check_audience(claims: dict[str, Any], audiences: list[str], required: bool = True) -> None:
    aud = claims.get("aud")
    if aud is None and not required:
        return
    values = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(v, str) and v in audiences for v in values):
        raise ProofError("Proof audience (aud) is not this issuer.")


def check_code_hash(claims: dict[str, Any], code: str, required: bool = True) -> None:
    c_hash = claims.get("c_hash")
    if c_hash is None and not required:
        return
    if not isinstance(c_hash, str) or not hmac.compare_digest(c_hash.encode(), code_hash(code).encode()):
        raise ProofError("Proof c_hash does not match the authorization code.")


def check_token_hash(claims: dict[str, Any], token: str, required: bool = False) -> None:
    """An actor token's binding to the subject token it is exchanged with (``ath``)."""
    if "c_hash" in claims:
        raise ProofError("An actor token names no code (c_hash): a hop proof is not an actor token.")
    ath = claims.get("ath")
    if ath is None:
        if required:
            raise ProofError("The actor token must carry ath (TOKEN_EXCHANGE_REQUIRE_ATH).")
        return
    if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), token_hash(token).encode()):
        raise ProofError("The actor token's ath does not match the subject token.")


def check_joined_hashes(claims: dict[str, Any], joined_codes) -> None:
    """A join's proof names each joined code, in order, by its ``c_hash``
    (``joined_c_hashes``); a proof for a hop that joins nothing names none."""
    value = claims.get("joined_c_hashes")
    if not joined_codes:
        if value not in (None, []):
            raise ProofError("Proof joined_c_hashes names codes this request does not join.")
        return
    if not isinstance(value, list) or len(value) != len(joined_codes):
        raise ProofError("Proof joined_c_hashes must list the c_hash of each joined code, in order.")
    for c_hash, code in zip(value, joined_codes, strict=True):
        if not isinstance(c_hash, str) or not hmac.compare_digest(c_hash.encode(), code_hash(code).encode()):
            raise ProofError("Proof joined_c_hashes does not match the joined codes.")


def check_jti(claims: dict[str, Any], required: bool = True) -> str:
    jti = claims.get("jti")
    if jti is None and not required:
        return ""
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise ProofError("Proof jti is missing or invalid.")
    return jti


def message_digest(claims: dict[str, Any]) -> str:
    value = claims.get("msg_sha256", "")
    if not isinstance(value, str) or len(value) > 128:
        raise ProofError("Proof msg_sha256 must be a string of at most 128 characters.")
    return value


# --- the agent proof ----------------------------------------------------------------


def select_key(keys: list[Any], kid: Any) -> Any:
    """Pick the signing key among an agent's active keys: by ``kid``, or the only one."""
    if kid is not None:
        for key in keys:
            if key.kid == kid:
                return key
        raise ProofError("Proof key id (kid) is not one of the agent's active keys.")
    if len(keys) == 1:
        return keys[0]
    raise ProofError("Proof has no kid and the agent has several active keys.")


def verify_agent_proof(
    token: str,
    *,
    code: str | None,
    audiences: list[str],
    find_keys,
    relaxed: bool = False,
    poc: bool = False,
    joined_codes=(),
    subject_token: str | None = None,
    require_ath: bool = False,
) -> VerifiedProof:
    """Verify an agent's hop proof.

    ``find_keys(sub)`` returns the active ``AgentKey`` rows of the active agent with
    that identifier that the calling client may hand codes to (empty if none).
    In relaxed (PoC) mode a proof carrying its own ``jwk`` header is accepted as a
    self-asserted did:jwk machine account, and aud/jti/c_hash become optional.
    ``poc`` (a PoC-compatible client, with ``relaxed``): the self-asserted key names the
    account by its thumbprint whatever ``sub`` says (``sub`` is kept in the claims as a
    label), and proofs may live an hour, as the PoC's do. ``joined_codes``: a join's
    additional parents, which ``joined_c_hashes`` must name in order.

    ``code`` None: an RFC 8693 ``actor_token`` for exchanging ``subject_token``. It names
    no code (a ``c_hash`` says it is a hop proof, refused here), and its ``ath`` (as
    DPoP's: base64url SHA-256 of the subject token) must match when present, or always
    with ``require_ath``.
    """
    header, payload = parse_compact(token)
    if "crit" in header:
        raise ProofError("Proof uses unsupported critical header parameters.")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ProofError("Proof sub is missing.")

    self_asserted: dict[str, Any] = {}
    key_row = None
    if relaxed and "jwk" in header:
        try:
            public = load_public_keys(json.dumps(header["jwk"]))[0]
        except (ValueError, TypeError) as exc:
            raise ProofError("Proof jwk header is not a public key.") from exc
        public.pop("kid", None)
        alg = check_algorithm(header.get("alg"))
        verify_signature(token, public, alg)
        if poc:
            sub = did_jwk(public)  # the account is the key's; the PoC's sub ("<agent>-key") is a label
        elif did_jwk_thumbprint(sub) != jwk.JWK(**public).thumbprint():
            raise ProofError("Proof sub must be the did:jwk of its jwk header.")
        self_asserted = public
        log.warning("chain_grant: accepted a self-asserted proof key (RELAXED_PROOFS) for %s", sub[:48])
    else:
        keys = list(find_keys(sub))
        if not keys:
            raise ProofError("Proof sub is not an active agent registered for this client.")
        key_row = select_key(keys, header.get("kid"))
        alg = check_algorithm(header.get("alg"), key_row.agent.allowed_algorithms)
        verify_signature(token, key_row.jwk, alg)

    check_times(payload, max_lifetime=POC_PROOF_LIFETIME if poc and relaxed else None)
    check_audience(payload, audiences, required=not relaxed)
    jti = check_jti(payload, required=not relaxed)
    if code is not None:
        check_code_hash(payload, code, required=not relaxed)
    else:
        check_token_hash(payload, subject_token or "", required=require_ath)
    check_joined_hashes(payload, joined_codes)
    if relaxed and key_row is not None:
        log.info("chain_grant: RELAXED_PROOFS is on; aud/jti/c_hash optional for %s", sub[:48])
    return VerifiedProof(
        subject=sub,
        claims=payload,
        digest=sha256_hex(token),
        jti=jti,
        message_digest=message_digest(payload),
        key=key_row,
        self_asserted_jwk=self_asserted,
        thumbprint=jwk.JWK(**(key_row.jwk if key_row is not None else self_asserted)).thumbprint(),
    )


# --- the wallet's self-issued id_token (SIOPv2) ------------------------------------


@dataclass
class VerifiedPresentation:
    """A verified self-issued id_token: the holder's subject, public key and claims."""

    subject: str
    public_jwk: dict[str, Any]
    thumbprint: str
    claims: dict[str, Any]
    digest: str
    jti: str = ""


def _one_public_key(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or "keys" in value or "kty" not in value:  # jwcrypto: KeyError for {}
        raise ValueError("not a single JWK")
    public = load_public_keys(json.dumps(value))[0]
    public.pop("kid", None)
    return public


def _holder_key(sub: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The public key a self-issued ``sub`` names: a did:jwk, or an RFC 9278 JWK
    thumbprint URI whose ``sub_jwk`` claim carries the key."""
    if sub.startswith(DID_JWK_PREFIX):
        try:
            return _one_public_key(strict_json(did_jwk_text(sub)))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError) as exc:
            raise ProofError("id_token sub is not a did:jwk of a public key.") from exc
    if sub.startswith(JWK_THUMBPRINT_URI):
        try:
            public = _one_public_key(payload.get("sub_jwk"))
        except (ValueError, TypeError) as exc:
            raise ProofError("id_token with a JWK thumbprint sub must carry its public key in sub_jwk.") from exc
        if not hmac.compare_digest(sub[len(JWK_THUMBPRINT_URI) :].encode(), jwk.JWK(**public).thumbprint().encode()):
            raise ProofError("id_token sub is not the thumbprint of sub_jwk.")
        return public
    raise ProofError("id_token sub must be a did:jwk or a JWK thumbprint URI (self-issued).")


def verify_self_issued_id_token(token: str, *, audience: str, nonce: str) -> VerifiedPresentation:
    """Verify a wallet's SIOPv2 self-issued id_token (SIOPv2 §11): ``iss`` = ``sub`` =
    the holder's key identifier, signed by that key with an allowed asymmetric
    ``alg``, ``aud`` = this IdP as verifier, the request's ``nonce``, ``iat``/``exp``."""
    header, payload = parse_compact(token)
    if "crit" in header:
        raise ProofError("id_token uses unsupported critical header parameters.")
    sub, iss = payload.get("sub"), payload.get("iss")
    if not isinstance(sub, str) or not sub:
        raise ProofError("id_token sub is missing.")
    if iss != sub:
        raise ProofError("id_token is not self-issued (iss must equal sub).")
    public = _holder_key(sub, payload)
    alg = check_algorithm(header.get("alg"))
    verify_signature(token, public, alg)
    check_times(payload, max_lifetime=chain_grant_settings.WALLET_ID_TOKEN_LIFETIME)
    check_audience(payload, [audience])
    got = payload.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise ProofError("id_token nonce does not match the wallet request.")
    jti = payload.get("jti", "")
    return VerifiedPresentation(
        subject=sub,
        public_jwk=public,
        thumbprint=jwk.JWK(**public).thumbprint(),
        claims=payload,
        digest=sha256_hex(token),
        jti=jti if isinstance(jti, str) else "",
    )
