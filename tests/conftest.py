"""Fixtures: a confidential client enabled for code_chain, a person, registered
agents with keys, and helpers that drive the real endpoints (authorize, token,
introspect) the way a client would."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from jwcrypto import jwk
from oauth2_provider.models import get_application_model

from chain_grant.client import generate_key, pkce_pair, sign_proof
from chain_grant.core import agents
from chain_grant.models import ChainClient

ISSUER = "http://testserver/oauth"
REDIRECT_URI = "http://127.0.0.1:8765/oauth-callback"
SECRET = "s3cret-for-tests"


def pytest_collection_modifyitems(config, items):
    on_postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres", "pgsql"))
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL (CI runs it)")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip)


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@dataclass
class TestAgent:
    identifier: str
    key: jwk.JWK
    model: object

    def proof(self, code: str, **kwargs) -> str:
        kwargs.setdefault("aud", ISSUER)
        return sign_proof(self.key, sub=self.identifier, code=code, **kwargs)


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", "alice@example.com", "alice-pw")


@pytest.fixture
def make_app(db, alice):
    Application = get_application_model()

    def make(client_id="chain-client", enabled=True, **kwargs):
        fields = {
            "name": client_id,
            "client_id": client_id,
            "client_secret": SECRET,
            "client_type": Application.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
            "redirect_uris": REDIRECT_URI,
            "algorithm": Application.RS256_ALGORITHM,
            "user": alice,
            **kwargs,
        }
        app = Application.objects.create(**fields)
        if enabled:
            ChainClient.objects.create(application=app)
        return app

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def make_agent(db, app):
    def make(identifier, scopes="openid profile read write", kty="EC", applications=None, algorithms=None):
        key = generate_key(kty)
        public = json.dumps(key.export_public(as_dict=True))
        model = agents.register_agent(identifier, public, applications or [app], scopes, algorithms)
        return TestAgent(identifier, key, model)

    return make


@pytest.fixture
def planner(make_agent):
    return make_agent("planner")


@dataclass
class Flow:
    """Drives the IdP's endpoints with Django's test client."""

    client: object
    app: object
    secret: str = SECRET
    prefix: str = "/oauth"  # where the IdP mounts chain_grant.urls

    @property
    def issuer(self) -> str:
        return "http://testserver" + self.prefix

    def auth(self, app=None):
        app = app or self.app
        return {"HTTP_AUTHORIZATION": basic_auth(app.client_id, self.secret)}

    def authorize(self, user, scope="openid read write", app=None):
        """Log in, consent on DOT's authorize page, return (code, verifier)."""
        app = app or self.app
        verifier, challenge = pkce_pair()
        self.client.force_login(user)
        params = {
            "client_id": app.client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        url = f"{self.prefix}/authorize/?" + urlencode(params)
        page = self.client.get(url)
        assert page.status_code == 200, page.content
        response = self.client.post(url, {**params, "allow": "Authorize"})
        assert response.status_code == 302, response.content
        self.client.logout()
        query = parse_qs(urlparse(response["Location"]).query)
        return query["code"][0], verifier

    def hop(self, code, proof, app=None, pkce=True, **extra):
        data = {"grant_type": "code_chain", "authorization_code": code, "id_token": proof, **extra}
        verifier = None
        if pkce and "code_challenge" not in extra:
            verifier, challenge = pkce_pair()
            data.update(code_challenge=challenge, code_challenge_method="S256")
        response = self.client.post(f"{self.prefix}/token", data, **self.auth(app))
        response.verifier = verifier
        return response

    def advance(self, code, agent, **kwargs):
        response = self.hop(code, agent.proof(code, aud=self.issuer), **kwargs)
        assert response.status_code == 200, response.content
        body = response.json()
        return body["authorization_code"], response.verifier, body

    def exchange(self, code, verifier, app=None, redirect_uri=REDIRECT_URI):
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return self.client.post(f"{self.prefix}/token", data, **self.auth(app))

    def introspect(self, token, app=None):
        return self.client.post(f"{self.prefix}/introspect/", {"token": token}, **self.auth(app)).json()


@pytest.fixture
def flow(client, app):
    return Flow(client, app)


# --- browser tests: headless Debian Chromium (never a downloaded browser) ---------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 15_000


@pytest.fixture
def browser_page(monkeypatch):
    """A fresh page in headless Debian Chromium; every failed HTTP response and
    console error (but the favicon's 404) is recorded on ``page.problems``."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium not installed: .ci/run installs it")
    from playwright.sync_api import sync_playwright  # in requirements.txt: a missing install fails

    # Playwright's sync API drives an asyncio loop in this thread (greenlets); the ORM
    # calls the test makes in between would otherwise raise SynchronousOnlyOperation.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.problems = []
            page.on(
                "response",
                lambda r: (
                    r.status >= 400
                    and not r.url.endswith("/favicon.ico")
                    and page.problems.append(f"{r.status} {r.url}")
                ),
            )
            page.on(
                "console",
                lambda m: (
                    m.type == "error"
                    and not m.location.get("url", "").endswith("/favicon.ico")
                    and page.problems.append(f"console: {m.text} ({m.location.get('url')})")
                ),
            )
            page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
            yield page
        finally:
            browser.close()
            # Inside sync_playwright() the test runs in another contextvars context, so
            # Django handed it its own database connections: close them here, or
            # PostgreSQL refuses to drop the test database ("being accessed by other users").
            connections.close_all()


def screenshot(page, name: str) -> Path:
    """A full-page screenshot under test-artifacts/ (CI keeps them; look at them)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


# --- pytest's own log capture redacts too -------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _pytest_log_capture_is_redacted(pytestconfig):
    """caplog and the report's "Captured log" sections go through RedactFilter like the
    IdP's handlers: failure reports carry no code or token, and chain_grant.W005 (a handler
    without the filter) does not fire on pytest's handlers. Records keep exc_info."""
    from chain_grant.redaction import RedactFilter, redacts

    plugin = pytestconfig.pluginmanager.get_plugin("logging-plugin")
    for name in ("caplog_handler", "report_handler", "log_file_handler", "log_cli_handler"):
        handler = getattr(plugin, name, None)
        if handler is not None and not redacts(handler):
            handler.addFilter(RedactFilter())
