"""An agent's key pair and its hop proof (compact JWS). jwcrypto only."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from jwcrypto import jwk, jws

from .jose import code_hash, sha256_hex

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
    now = int(time.time())
    claims = {
        "iss": sub,
        "sub": sub,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
        "c_hash": code_hash(code),
    }
    if message is not None:
        claims["msg_sha256"] = message_digest(message)
    if joined_codes:
        claims["joined_c_hashes"] = [code_hash(joined) for joined in joined_codes]
    claims.update(extra or {})
    header = {"alg": alg or DEFAULT_ALG[key["kty"]], "typ": "JWT", "kid": key.get("kid") or key.thumbprint()}
    token = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return token.serialize(compact=True)
