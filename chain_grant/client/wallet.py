"""A headless wallet (SIOPv2 self-issued id_tokens over OpenID4VP ``direct_post``),
for tests, scripts and the agent chat example. Standard library HTTP and jwcrypto::

    wallet = HeadlessWallet.generate()            # or HeadlessWallet.load(path)
    url = request_url_from_html(page_html)        # the request page's openid:// link
    redirect = wallet.respond(url)                # sign, POST to response_uri
    # a browser session that GETs ``redirect`` is sent to the client with code + state
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

from jwcrypto import jwk, jws

from .http import ChainClientError
from .jose import did_jwk
from .keys import generate_key

Post = Callable[[str, dict[str, str]], tuple[int, dict[str, Any]]]


def parse_request_url(url: str) -> dict[str, str]:
    """The parameters of an ``openid://?…`` wallet request."""
    if not url.startswith("openid:") or "?" not in url:
        raise ValueError("not an openid:// wallet request")
    return dict(urllib.parse.parse_qsl(url.split("?", 1)[1], keep_blank_values=True))


def check_response_uri(request: dict[str, str]) -> None:
    """A request is anyone's text: answer over HTTP(S) only (never through urllib's
    file://, ftp:// or data: handlers)."""
    try:
        parts = urllib.parse.urlsplit(request.get("response_uri", ""))
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("the request's response_uri is not an http(s) URL")


class _RequestLink(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.url: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "a" and attributes.get("id") == "wallet-request" and self.url is None:
            self.url = attributes.get("href")


def request_url_from_html(html: str) -> str:
    """The ``openid://`` link (``<a id="wallet-request">``) of a wallet request page."""
    parser = _RequestLink()
    parser.feed(html)
    if not parser.url:
        raise ValueError("no wallet request link (a#wallet-request) in the page")
    return parser.url


def _urllib_post(url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        urllib.parse.urlencode(data).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": "server_error"}


class HeadlessWallet:
    """A wallet holding one private key; its identifier is the key's did:jwk."""

    def __init__(self, key: jwk.JWK, alg: str | None = None):
        if not key.has_private:
            raise ValueError("a wallet needs its private key")
        self.key = key
        self.alg = alg or {"EC": "ES256", "RSA": "RS256", "OKP": "EdDSA"}[key["kty"]]
        public = key.export_public(as_dict=True)
        public.pop("kid", None)
        self.did = did_jwk(public)

    @classmethod
    def generate(cls, kty: str = "EC") -> HeadlessWallet:
        return cls(generate_key(kty))

    @classmethod
    def load(cls, path: str) -> HeadlessWallet:
        with open(path) as f:
            return cls(jwk.JWK(**json.load(f)))

    def save(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.key.export(as_dict=True), f)

    def id_token(self, request: dict[str, str], *, lifetime: int = 300, claims: dict[str, Any] | None = None) -> str:
        """A self-issued id_token answering ``request`` (iss = sub = did, aud, nonce)."""
        now = int(time.time())
        payload = {
            "iss": self.did,
            "sub": self.did,
            "aud": request["client_id"],
            "nonce": request["nonce"],
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
            **(claims or {}),
        }
        token = jws.JWS(json.dumps(payload, separators=(",", ":")).encode())
        token.add_signature(self.key, alg=self.alg, protected=json.dumps({"alg": self.alg, "typ": "JWT"}))
        return token.serialize(compact=True)

    def respond(self, request_url: str, *, post: Post | None = None, **token_options) -> str:
        """Answer a wallet request: POST the id_token to its ``response_uri``; return
        the ``redirect_uri`` the verifier gives back. Raises ChainClientError."""
        request = parse_request_url(request_url)
        if request.get("response_type") != "id_token" or request.get("response_mode") != "direct_post":
            raise ValueError("only response_type=id_token with response_mode=direct_post is supported")
        check_response_uri(request)
        status, body = (post or _urllib_post)(
            request["response_uri"], {"id_token": self.id_token(request, **token_options), "state": request["state"]}
        )
        if status != 200 or "redirect_uri" not in body:
            raise ChainClientError(status, body)
        return body["redirect_uri"]
