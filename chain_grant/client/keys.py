"""An agent's key pair and its hop proof (compact JWS). jwcrypto only."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from jwcrypto import jwk, jws

from .jose import code_hash, sha256_hex, token_hash

DEFAULT_ALG = {"RSA": "RS512", "EC": "ES256", "OKP": "EdDSA"}


def generate_key(kty: str = "RSA") -> jwk.JWK:
    """A new private key with its RFC 7638 thumbprint as ``kid``."""
    params = {
        "RSA": {"kty": "RSA", "size": 2048},
        "EC": {"kty": "EC", "crv": "P-256"},
        "OKP": {"kty": "OKP", "crv": "Ed25519"},
    }[kty]
    key = jwk.JWK.generate(**params)
    return jwk.JWK(**{**key.export(as_dict=True), "kid": key.thumbprint()})


def load_private_key(path: str) -> jwk.JWK:
    """A private key from a JWK (JSON) or PEM file; ``kid`` defaults to its thumbprint."""
    with open(path, "rb") as f:
        data = f.read()
    key = jwk.JWK.from_pem(data) if data.lstrip().startswith(b"-----BEGIN") else jwk.JWK(**json.loads(data))
    if not key.has_private:
        raise ValueError(f"{path} holds no private key")
    if not key.get("kid"):
        key = jwk.JWK(**{**key.export(as_dict=True), "kid": key.thumbprint()})
    return key


def message_digest(message: str) -> str:
    """The ``msg_sha256`` claim: what the agent received, signed into its proof."""
    return sha256_hex(message)


def sign_proof(
    key: jwk.JWK,
    *,
    sub: str,
    aud: str,
    code: str,
    message: str | None = None,
    lifetime: int = 60,
    alg: str | None = None,
    extra: dict[str, Any] | None = None,
    joined_codes: list[str] | None = None,
) -> str:
    """The hop proof: a compact JWS with sub, aud, iat, exp, jti, c_hash (and msg_sha256).
    For a join, ``joined_codes`` (the other parents) become ``joined_c_hashes``, in order."""
    claims: dict[str, Any] = {"c_hash": code_hash(code)}
    if joined_codes:
        claims["joined_c_hashes"] = [code_hash(joined) for joined in joined_codes]
    return _agent_jwt(key, sub, aud, {**claims, **(extra or {})}, message, lifetime, alg)


def actor_token(
    key: jwk.JWK,
    *,
    sub: str,
    aud: str,
    subject_token: str,
    message: str | None = None,
    lifetime: int = 60,
    alg: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """An RFC 8693 ``actor_token`` (type ``urn:ietf:params:oauth:token-type:jwt``) for
    exchanging ``subject_token``: the hop proof's claims with ``ath`` (base64url SHA-256
    of the subject token, binding it to this exchange) in place of ``c_hash``."""
    return _agent_jwt(key, sub, aud, {"ath": token_hash(subject_token), **(extra or {})}, message, lifetime, alg)


def _agent_jwt(key, sub, aud, claims, message, lifetime, alg) -> str:
    """An agent's signed JWT: iss = sub, aud, iat, exp, a fresh jti, msg_sha256, ``claims``."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": sub,
        "sub": sub,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    if message is not None:
        base["msg_sha256"] = message_digest(message)
    claims = {**base, **claims}
    header = {"alg": alg or DEFAULT_ALG[key["kty"]], "typ": "JWT", "kid": key.get("kid") or key.thumbprint()}
    token = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return token.serialize(compact=True)


CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_assertion(
    key: jwk.JWK,
    *,
    client_id: str,
    aud: str,
    lifetime: int = 60,
    alg: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A private_key_jwt client assertion (RFC 7523 §2.2): iss = sub = client_id, aud =
    the issuer (or the endpoint's URL), a short lifetime and a fresh jti. Send it as
    ``client_assertion`` with ``client_assertion_type`` = CLIENT_ASSERTION_TYPE."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + lifetime}
    claims["jti"] = str(uuid.uuid4())
    claims.update(extra or {})
    header = {"alg": alg or DEFAULT_ALG[key["kty"]], "typ": "JWT", "kid": key.get("kid") or key.thumbprint()}
    token = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return token.serialize(compact=True)


def dpop_proof(
    key: jwk.JWK,
    *,
    htm: str,
    htu: str,
    access_token: str | None = None,
    nonce: str | None = None,
    alg: str | None = None,
) -> str:
    """A DPoP proof (RFC 9449 §4.2) for one request: ``typ`` dpop+jwt, the public key in
    ``jwk``, a fresh ``jti``, ``htm``/``htu``/``iat``; ``ath`` when presenting
    ``access_token``; the server's ``nonce`` when it asked for one (``DPoP-Nonce``)."""
    claims: dict[str, Any] = {"jti": str(uuid.uuid4()), "htm": htm, "htu": htu, "iat": int(time.time())}
    if access_token is not None:
        claims["ath"] = token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    header = {"typ": "dpop+jwt", "alg": alg or DEFAULT_ALG[key["kty"]], "jwk": key.export_public(as_dict=True)}
    token = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return token.serialize(compact=True)


def dpop_thumbprint(key: jwk.JWK) -> str:
    """``jkt``: the RFC 7638 thumbprint of the key (what ``dpop_jkt`` and ``cnf.jkt`` name)."""
    return key.thumbprint()
