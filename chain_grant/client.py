"""A small helper for agents: sign a hop proof, call ``code_chain``, exchange a code.

Standard library HTTP (urllib) and jwcrypto only, so an agent needs nothing else::

    key = load_private_key("var/agents/planner.json")
    proof = sign_proof(key, sub="planner", aud=issuer, code=previous_code, message=text)
    hop = code_chain(token_url, client_id, client_secret, previous_code, proof,
                     code_challenge=challenge)
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from jwcrypto import jwk, jws

from .proofs import code_hash

DEFAULT_ALG = {"RSA": "RS512", "EC": "ES256", "OKP": "EdDSA"}


class ChainClientError(Exception):
    """The server answered with an OAuth error (``error``, ``description``, ``status``)."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.error = body.get("error", "server_error")
        self.description = body.get("error_description", "")
        super().__init__(f"{status} {self.error}: {self.description}")


def generate_key(kty: str = "RSA") -> jwk.JWK:
    """A new private key with its RFC 7638 thumbprint as ``kid``."""
    params = {"RSA": {"kty": "RSA", "size": 2048}, "EC": {"kty": "EC", "crv": "P-256"},
              "OKP": {"kty": "OKP", "crv": "Ed25519"}}[kty]
    key = jwk.JWK.generate(**params)
    return jwk.JWK(**{**key.export(as_dict=True), "kid": key.thumbprint()})


def load_private_key(path: str) -> jwk.JWK:
    with open(path) as f:
        return jwk.JWK(**json.load(f))


def message_digest(message: str) -> str:
    return hashlib.sha256(message.encode("utf-8")).hexdigest()


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
) -> str:
    """The hop proof: a compact JWS with sub, aud, iat, exp, jti, c_hash (and msg_sha256)."""
    now = int(time.time())
    claims = {"iss": sub, "sub": sub, "aud": aud, "iat": now, "exp": now + lifetime,
              "jti": str(uuid.uuid4()), "c_hash": code_hash(code)}
    if message is not None:
        claims["msg_sha256"] = message_digest(message)
    claims.update(extra or {})
    header = {"alg": alg or DEFAULT_ALG[key["kty"]], "typ": "JWT", "kid": key.get("kid") or key.thumbprint()}
    token = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return token.serialize(compact=True)


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _post(url: str, data: dict[str, str], client_id: str, client_secret: str | None) -> dict[str, Any]:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if client_secret is not None:
        basic = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
    else:
        data = {**data, "client_id": client_id}
    request = urllib.request.Request(url, urllib.parse.urlencode(data).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {"error": "server_error"}
        raise ChainClientError(exc.code, body) from None


def code_chain(
    token_url: str,
    client_id: str,
    client_secret: str | None,
    code: str,
    proof: str,
    *,
    scope: str | None = None,
    code_challenge: str | None = None,
) -> dict[str, Any]:
    """One hop: previous code + the receiving agent's proof → the next code."""
    data = {"grant_type": "code_chain", "authorization_code": code, "id_token": proof}
    if scope is not None:
        data["scope"] = scope
    if code_challenge:
        data.update(code_challenge=code_challenge, code_challenge_method="S256")
    return _post(token_url, data, client_id, client_secret)


def exchange_code(
    token_url: str,
    client_id: str,
    client_secret: str | None,
    code: str,
    *,
    redirect_uri: str,
    code_verifier: str | None = None,
) -> dict[str, Any]:
    """Exchange any code of the chain for that step's access token."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        data["code_verifier"] = code_verifier
    return _post(token_url, data, client_id, client_secret)


def main(argv: list[str] | None = None) -> int:
    """``python -m chain_grant.client proof|pkce …``: for shell scripts and curl users."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m chain_grant.client")
    sub = parser.add_subparsers(dest="command", required=True)
    proof = sub.add_parser("proof", help="Print a signed hop proof (compact JWS).")
    proof.add_argument("--key", required=True, help="The agent's private JWK file.")
    proof.add_argument("--sub", required=True, help="The agent's identifier.")
    proof.add_argument("--aud", required=True, help="The IdP's issuer, e.g. http://127.0.0.1:8000/oauth")
    proof.add_argument("--code", required=True, help="The previous code (for c_hash).")
    proof.add_argument("--message", help="The message the agent received (signed as msg_sha256).")
    sub.add_parser("pkce", help="Print a PKCE code_verifier and its S256 code_challenge.")
    args = parser.parse_args(argv)
    if args.command == "pkce":
        verifier, challenge = pkce_pair()
        print(f"CODE_VERIFIER={verifier}\nCODE_CHALLENGE={challenge}")
    else:
        key = load_private_key(args.key)
        print(sign_proof(key, sub=args.sub, aud=args.aud, code=args.code, message=args.message))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
