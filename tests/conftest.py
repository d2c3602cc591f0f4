"""Fixtures: a confidential client enabled for code_chain, people, registered agents
with keys, ``flow`` (drives the real endpoints the way a client would), the wallet
step's ``wflow``, a real chain, CHAIN_GRANT overrides and a headless browser. Plain
helpers live in tests/helpers.py.

Hooks (tests/postgres_only.py): tests marked ``postgres`` are skipped on SQLite, and the
terminal summary says loudly how many were."""

from __future__ import annotations

import json
import os

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from oauth2_provider.models import get_application_model

from chain_grant.client import generate_key
from chain_grant.client.wallet import HeadlessWallet
from chain_grant.core import agents
from chain_grant.models import ChainClient
from tests.helpers import (
    REDIRECT_URI,
    SECRET,
    Flow,
    TestAgent,
    WalletFlow,
    build_real_chain,
)
from tests.postgres_only import pytest_collection_modifyitems, pytest_terminal_summary  # noqa: F401 (hooks)


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


@pytest.fixture
def flow(client, app):
    return Flow(client, app)


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", "bob@example.com", "bob-pw")


@pytest.fixture
def chain_settings(settings):
    """Override CHAIN_GRANT keys: ``chain_settings(MAX_CHILDREN=1)`` (chain_grant_settings
    reloads on setting_changed; the ``settings`` fixture restores everything)."""

    def override(**values):
        settings.CHAIN_GRANT = {**getattr(settings, "CHAIN_GRANT", {}), **values}

    return override


@pytest.fixture
def real_chain(flow, alice, make_agent):
    """root (alice) → planner → (researcher → merger, security); see helpers.build_real_chain."""
    return build_real_chain(flow, alice, make_agent)


@pytest.fixture
def exchanged_tree(flow, alice, make_agent):
    """root → planner → (researcher → merger, security); every agent code but the
    planner's exchanged. ``tree.<name>`` is (code, verifier, hop body); ``tree.tokens``."""
    planner, researcher = make_agent("planner"), make_agent("researcher", scopes="openid read")
    security, merger = make_agent("security", scopes="read"), make_agent("merger", scopes="openid read")
    root_code, _ = flow.authorize(alice, scope="openid read write")
    t = type("Tree", (), {})()
    t.planner = flow.advance(root_code, planner)
    t.researcher = flow.advance(t.planner[0], researcher)
    t.security = flow.advance(t.planner[0], security)
    t.merger = flow.advance(t.researcher[0], merger)
    t.tokens = {}
    for name in ("researcher", "security", "merger"):
        code, verifier, _ = getattr(t, name)
        response = flow.exchange(code, verifier)
        assert response.status_code == 200
        t.tokens[name] = response.json()
    return t


@pytest.fixture
def wflow(client, app):
    """The wallet step driven through Django's test client (helpers.WalletFlow)."""
    return WalletFlow(client, app)


@pytest.fixture
def wallet():
    return HeadlessWallet.generate()


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
