"""Fixtures for the existing-IdP checks. tests/conftest.py (a parent directory) is
loaded too, so ``alice``, ``app``, ``make_app`` and ``make_agent`` come from there;
its ``Flow`` is written for ``/oauth/``, so here is the same for ``/o/``.

These checks only make sense under ``tests.existing_idp.settings``; the main run
does not collect them (``check_*.py``) and ``tests/test_existing_idp.py`` runs them
in a subprocess with those settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.conf import settings

from chain_grant.client import pkce_pair
from tests.conftest import REDIRECT_URI, SECRET, basic_auth

from . import validators

PREFIX = "/o"
ISSUER = "http://testserver" + PREFIX
SETTINGS_MODULE = "tests.existing_idp.settings"


@pytest.fixture(autouse=True)
def _existing_idp_settings_only():
    if settings.ROOT_URLCONF != "tests.existing_idp.urls":
        pytest.skip(f"run with --ds={SETTINGS_MODULE} (tests/test_existing_idp.py does)")


@pytest.fixture(autouse=True)
def calls():
    validators.CALLS.clear()
    yield validators.CALLS
    validators.CALLS.clear()


@dataclass
class AcmeFlow:
    """Drives this IdP's endpoints under ``/o/`` with Django's test client."""

    client: object
    app: object
    secret: str = SECRET

    def auth(self, app=None):
        app = app or self.app
        return {"HTTP_AUTHORIZATION": basic_auth(app.client_id, self.secret)}

    def authorize_params(self, scope, app=None):
        verifier, challenge = pkce_pair()
        params = {
            "client_id": (app or self.app).client_id, "response_type": "code", "redirect_uri": REDIRECT_URI,
            "scope": scope, "state": "st", "code_challenge": challenge, "code_challenge_method": "S256",
        }
        return params, verifier

    def authorize(self, user, scope="openid read write", app=None):
        """Log in, consent at /o/authorize/, return (code, verifier)."""
        params, verifier = self.authorize_params(scope, app)
        self.client.force_login(user)
        url = f"{PREFIX}/authorize/?" + urlencode(params)
        page = self.client.get(url)
        assert page.status_code == 200, page.content
        response = self.client.post(url, {**params, "allow": "Authorize"})
        assert response.status_code == 302, response.content
        self.client.logout()
        query = parse_qs(urlparse(response["Location"]).query)
        assert "code" in query, response["Location"]
        return query["code"][0], verifier

    def hop(self, code, proof, app=None, **extra):
        verifier, challenge = pkce_pair()
        data = {"grant_type": "code_chain", "authorization_code": code, "id_token": proof,
                "code_challenge": challenge, "code_challenge_method": "S256", **extra}
        response = self.client.post(f"{PREFIX}/token/", data, **self.auth(app))
        response.verifier = verifier
        return response

    def advance(self, code, agent, **kwargs):
        response = self.hop(code, agent.proof(code, aud=ISSUER), **kwargs)
        assert response.status_code == 200, response.content
        return response.json()["authorization_code"], response.verifier, response.json()

    def exchange(self, code, verifier, app=None):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier}
        return self.client.post(f"{PREFIX}/token/", data, **self.auth(app))

    def introspect(self, token, app=None):
        response = self.client.post(f"{PREFIX}/introspect/", {"token": token}, **self.auth(app))
        assert response.status_code == 200, response.content
        return response.json()

    def userinfo(self, access_token):
        return self.client.get(f"{PREFIX}/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")


@pytest.fixture
def acme(client, app):
    return AcmeFlow(client, app)
