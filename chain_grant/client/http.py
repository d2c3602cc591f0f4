"""The token endpoint, as an agent calls it: ``code_chain`` hops and code exchange.

Standard library HTTP (urllib) only, so an agent needs nothing but jwcrypto.

The client authenticates either with its secret (HTTP Basic) or with its private key
(``private_key_jwt``, RFC 7523 §2.2): pass a :class:`PrivateKeyJWT` where the secret
goes, and every request carries a fresh, single-use client assertion instead::

    auth = PrivateKeyJWT(load_private_key("var/demo_client_key.json"), "chain-demo", issuer)
    hop = code_chain(token_url, "chain-demo", auth, previous_code, proof)
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from jwcrypto import jwk

from .keys import CLIENT_ASSERTION_TYPE, client_assertion, dpop_proof, load_private_key


class ChainClientError(Exception):
    """The server answered with an OAuth error (``error``, ``description``, ``status``)."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.nonce: str | None = None  # the server's DPoP-Nonce, if it sent one
        self.error = body.get("error", "server_error")
        self.description = body.get("error_description", "")
        super().__init__(f"{status} {self.error}: {self.description}")


class PrivateKeyJWT:
    """``private_key_jwt`` client authentication (RFC 7523 §2.2): pass it where the client
    secret goes (``code_chain``, ``exchange_code``). Each request gets a new assertion
    (iss = sub = ``client_id``, a fresh jti, ``lifetime`` seconds), signed with ``key``,
    the private half of a key registered for the client
    (``manage.py chain_grant_client keys add``).

    ``audience``: the IdP's issuer (e.g. ``http://127.0.0.1:8000/oauth``, from discovery);
    None: the URL of the endpoint each request is posted to (also accepted; the issuer is
    the safer choice behind a proxy)."""

    def __init__(
        self,
        key: jwk.JWK,
        client_id: str,
        audience: str | None = None,
        *,
        lifetime: int = 60,
        alg: str | None = None,
    ):
        if not isinstance(key, jwk.JWK) or not key.has_private:
            raise ValueError("PrivateKeyJWT needs the client's private key (a jwcrypto JWK)")
        if not client_id:
            raise ValueError("PrivateKeyJWT needs the client_id")
        self.key, self.client_id, self.audience = key, client_id, audience
        self.lifetime, self.alg = lifetime, alg

    @classmethod
    def from_file(cls, path: str, client_id: str, audience: str | None = None, **options: Any) -> PrivateKeyJWT:
        """The client's private key from a JWK (JSON) or PEM file (``load_private_key``)."""
        return cls(load_private_key(path), client_id, audience, **options)

    def assertion(self, url: str) -> str:
        """A new client assertion for a request to ``url``."""
        return client_assertion(
            self.key, client_id=self.client_id, aud=self.audience or url, lifetime=self.lifetime, alg=self.alg
        )

    def form_fields(self, url: str) -> dict[str, str]:
        """The form fields that authenticate one request to ``url``."""
        return {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": self.assertion(url)}

    def __repr__(self) -> str:  # never the key
        return f"PrivateKeyJWT(client_id={self.client_id!r}, kid={self.key.get('kid')!r}, audience={self.audience!r})"


class DPoPKey:
    """The key a caller proves possession of (DPoP, RFC 9449): pass it as ``dpop=`` to
    ``code_chain`` / ``exchange_code`` and every request carries a fresh proof; the
    codes and tokens it gets are bound to this key. It remembers the server's
    ``DPoP-Nonce`` (a request refused with ``use_dpop_nonce`` is sent once more with it).
    ``headers(token, method, url)`` gives what a resource server needs."""

    def __init__(self, key: jwk.JWK, *, alg: str | None = None):
        if not isinstance(key, jwk.JWK) or not key.has_private:
            raise ValueError("DPoPKey needs a private key (a jwcrypto JWK)")
        self.key, self.alg = key, alg
        self.nonce: str | None = None  # the server's latest DPoP-Nonce

    @property
    def jkt(self) -> str:
        """The key's RFC 7638 thumbprint (``dpop_jkt`` at authorize; ``cnf.jkt``)."""
        return self.key.thumbprint()

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        return dpop_proof(self.key, htm=method, htu=url, access_token=access_token, nonce=self.nonce, alg=self.alg)

    def headers(self, access_token: str, method: str, url: str) -> dict[str, str]:
        """``Authorization: DPoP <token>`` and its proof, for a call to a resource server."""
        return {"Authorization": f"DPoP {access_token}", "DPoP": self.proof(method, url, access_token)}

    def __repr__(self) -> str:  # never the key
        return f"DPoPKey(jkt={self.jkt!r})"


ClientAuth = str | PrivateKeyJWT | None
"""How a client authenticates: its secret (HTTP Basic), a :class:`PrivateKeyJWT`, or
None (a public client: ``client_id`` in the body)."""


def _post(
    url: str, data: dict[str, str], client_id: str, client_auth: ClientAuth, dpop: DPoPKey | None = None
) -> dict[str, Any]:
    for attempt in range(2):  # once more only with the server's new DPoP nonce
        try:
            return _post_once(url, data, client_id, client_auth, dpop)
        except ChainClientError as exc:
            if attempt or dpop is None or exc.error != "use_dpop_nonce" or not exc.nonce:
                raise
            dpop.nonce = exc.nonce
    raise AssertionError("unreachable")  # pragma: no cover


def _post_once(url, data, client_id, client_auth, dpop) -> dict[str, Any]:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if isinstance(client_auth, PrivateKeyJWT):
        if client_auth.client_id != client_id:
            raise ValueError(f"the PrivateKeyJWT is for client {client_auth.client_id!r}, not {client_id!r}")
        data = {**data, **client_auth.form_fields(url)}  # one method per request: no secret, no Basic
    elif client_auth is not None:
        basic = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_auth)}"
        headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
    else:
        data = {**data, "client_id": client_id}
    if dpop is not None:
        headers["DPoP"] = dpop.proof("POST", url)
    request = urllib.request.Request(url, urllib.parse.urlencode(data, doseq=True).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            if dpop is not None and response.headers.get("DPoP-Nonce"):
                dpop.nonce = response.headers["DPoP-Nonce"]
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {"error": "server_error"}
        error = ChainClientError(exc.code, body)
        error.nonce = exc.headers.get("DPoP-Nonce")
        raise error from None


def code_chain(
    token_url: str,
    client_id: str,
    client_secret: ClientAuth,
    code: str,
    proof: str,
    *,
    scope: str | None = None,
    code_challenge: str | None = None,
    joined_codes: list[str] | None = None,
    dpop: DPoPKey | None = None,
) -> dict[str, Any]:
    """One hop: previous code + the receiving agent's proof → the next code. A join
    also names the other parents' codes (``joined_codes``; the proof must carry their
    ``joined_c_hashes``). ``client_secret``: the secret, a :class:`PrivateKeyJWT` or None.
    ``dpop``: a :class:`DPoPKey` binds the new code to that key."""
    data = {"grant_type": "code_chain", "authorization_code": code, "id_token": proof}
    if joined_codes:
        data["joined_codes"] = " ".join(joined_codes)
    if scope is not None:
        data["scope"] = scope
    if code_challenge:
        data.update(code_challenge=code_challenge, code_challenge_method="S256")
    return _post(token_url, data, client_id, client_secret, dpop)


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def token_exchange(
    token_url: str,
    client_id: str,
    client_secret: ClientAuth,
    subject_token: str,
    actor_token: str,
    *,
    scope: str | None = None,
    resource: list[str] | None = None,
    dpop: DPoPKey | None = None,
) -> dict[str, Any]:
    """RFC 8693 token exchange: a chain step's access token (``subject_token``) and the
    next agent's ``actor_token`` (see :func:`chain_grant.client.actor_token`) → that
    agent's own access token, a new step of the same chain. ``dpop``: the key a bound
    subject token needs (the new token is bound to it too)."""
    data: dict[str, Any] = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "actor_token": actor_token,
        "actor_token_type": JWT_TOKEN_TYPE,
    }
    if scope is not None:
        data["scope"] = scope
    if resource:
        data["resource"] = resource
    return _post(token_url, data, client_id, client_secret, dpop)


def exchange_code(
    token_url: str,
    client_id: str,
    client_secret: ClientAuth,
    code: str,
    *,
    redirect_uri: str,
    code_verifier: str | None = None,
    dpop: DPoPKey | None = None,
) -> dict[str, Any]:
    """Exchange any code of the chain for that step's access token. ``client_secret``:
    the secret, a :class:`PrivateKeyJWT` or None. ``dpop``: the key a bound code needs;
    the token comes back ``token_type=DPoP``, bound to it."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        data["code_verifier"] = code_verifier
    return _post(token_url, data, client_id, client_secret, dpop)
