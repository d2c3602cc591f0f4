"""The token endpoint, as an agent calls it: ``code_chain`` hops and code exchange.

Standard library HTTP (urllib) only, so an agent needs nothing but jwcrypto.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ChainClientError(Exception):
    """The server answered with an OAuth error (``error``, ``description``, ``status``)."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.error = body.get("error", "server_error")
        self.description = body.get("error_description", "")
        super().__init__(f"{status} {self.error}: {self.description}")


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
    joined_codes: list[str] | None = None,
) -> dict[str, Any]:
    """One hop: previous code + the receiving agent's proof → the next code. A join
    also names the other parents' codes (``joined_codes``; the proof must carry their
    ``joined_c_hashes``)."""
    data = {"grant_type": "code_chain", "authorization_code": code, "id_token": proof}
    if joined_codes:
        data["joined_codes"] = " ".join(joined_codes)
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
