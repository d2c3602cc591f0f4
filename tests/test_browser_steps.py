"""The two browser steps in a real browser (issue 3), headless Debian Chromium driven
by Playwright against pytest-django's live server:

(a) a client opens authorize with response_type=id_token → the wallet request page →
    the demo web wallet (/wallet/, a WebCrypto key in localStorage) answers in a
    second tab → the first tab, polling, lands on the client's redirect_uri with a
    code that is a ``wallet`` root; an agent chains from it.
(b) an agent-advanced code → authorize with code= and prompt=login → login → the
    consent page lists the chain → the new code is a ``user`` child of the agent's
    step, and an agent chains from it.

The client's callback is a real HTTP server on a free port, registered as one of
its redirect URIs. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.contrib.auth import get_user_model

from chain_grant.client import pkce_pair
from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant, Wallet
from tests.helpers import REDIRECT_URI, screenshot


@pytest.fixture
def callback(flow):
    """The client's callback: a real HTTP server on a free port, registered as one of
    the client's redirect URIs; ``callback.received`` lists the URLs it was sent."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/favicon.ico":  # Chromium asks; not part of the protocol
                self.send_response(404)
                self.end_headers()
                return
            received.append(f"http://127.0.0.1:{self.server.server_port}{self.path}")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>client callback</h1>")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.uri = f"http://127.0.0.1:{server.server_port}/oauth-callback"
    server.received = received
    flow.app.redirect_uris = f"{REDIRECT_URI} {server.uri}"
    flow.app.save()
    yield server
    server.shutdown()


def code_from(url: str, state: str) -> str:
    query = parse_qs(urlparse(url).query)
    assert query.get("state") == [state], url
    assert "error" not in query, url
    return query["code"][0]


@pytest.mark.django_db(transaction=True)
def test_wallet_presentation_starts_a_chain_in_a_browser(browser_page, live_server, flow, make_agent, callback):
    page = browser_page
    base = live_server.url
    verifier, challenge = pkce_pair()
    params = {
        "client_id": flow.app.client_id,
        "redirect_uri": callback.uri,
        "response_type": "id_token",
        "scope": "openid read write",
        "state": "browser-wallet",
        "client_metadata": "{}",
        "prompt": "login",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page.goto(f"{base}/oauth/authorize/?{urlencode(params)}")

    # The request page: QR code (inline SVG), the openid:// link, what the client gets.
    assert page.locator("#wallet-qr svg").count() == 1
    openid_url = page.locator("a#wallet-request").get_attribute("href")
    assert openid_url.startswith("openid://?") and "response_mode=direct_post" in openid_url
    assert page.locator("#wallet-scopes li").count() == 3
    assert "Waiting for your wallet" in page.locator("#wallet-status").inner_text()
    screenshot(page, "wallet-1-request-page")

    # The demo web wallet opens in a second tab with the request filled in.
    with page.context.expect_page() as opened:
        page.click("#demo-wallet-link")
    wallet_page = opened.value
    wallet_page.wait_for_load_state()
    wallet_page.wait_for_function("document.getElementById('wallet-did').textContent.startsWith('did:jwk:')")
    did = wallet_page.locator("#wallet-did").inner_text().strip()
    assert wallet_page.locator("#wallet-verifier").inner_text() == f"{base}/oauth"
    screenshot(wallet_page, "wallet-2-demo-wallet")
    wallet_page.click("#wallet-present")
    wallet_page.wait_for_selector("#wallet-continue")
    assert "Presented" in wallet_page.locator("#wallet-result").inner_text()

    # The first tab learns of it and goes to the client's redirect_uri with the code.
    page.wait_for_url(callback.uri + "?**")
    code = code_from(page.url, "browser-wallet")
    assert callback.received == [page.url]
    step = lifecycle.find_step(code)
    assert step.kind == ChainedGrant.Kind.WALLET and step.depth == 0 and step.parent_id is None
    assert step.subject == did and step.scope == "openid read write"
    assert step.user == Wallet.objects.get().user
    # The key stays in the browser: a second request is answered by the same did.
    assert wallet_page.evaluate("localStorage.getItem('chain_grant_demo_wallet_jwk') !== null")

    # The wallet root advances like any code: an agent chains from it.
    planner = make_agent("planner", scopes="openid read")
    next_code, _, body = flow.advance(code, planner)
    assert body["depth"] == 1 and body["chain_id"] == str(step.pk)
    assert page.problems == [], page.problems


@pytest.mark.django_db(transaction=True)
def test_person_consents_midway_in_a_browser(browser_page, live_server, flow, alice, make_agent, callback):
    page = browser_page
    base = live_server.url
    bob = get_user_model().objects.create_user("bob", "bob@example.com", "bob-browser-pw", first_name="Bob")

    planner = make_agent("planner", scopes="openid read write")
    critic = make_agent("critic", scopes="openid read")
    root, _ = flow.authorize(alice, scope="openid read write")
    planner_code, _, _ = flow.advance(root, planner)
    critic_code, _, _ = flow.advance(planner_code, critic)
    critic_step = lifecycle.find_step(critic_code)

    verifier, challenge = pkce_pair()
    params = {
        "client_id": flow.app.client_id,
        "redirect_uri": callback.uri,
        "response_type": "code",
        "prompt": "login",
        "scope": "email read",
        "state": "browser-user",
        "code": critic_code,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page.goto(f"{base}/oauth/authorize/?{urlencode(params)}")

    # prompt=login: the login page first.
    page.wait_for_url(f"{base}/accounts/login/**")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", "bob-browser-pw")
    page.click("[type=submit]")

    # The consent page: the chain so far, whom it acted for, and what is new.
    page.wait_for_selector("#chain-consent")
    steps = page.locator("#chain-steps li").all_inner_texts()
    assert len(steps) == 4  # root, planner, critic, and "you"
    assert steps[0].startswith("USER") or "user" in steps[0].lower()
    assert "alice" in steps[0] and "planner" in steps[1] and "critic" in steps[2] and "bob" in steps[3]
    assert "openid read" in steps[2]
    note = page.locator(".cg-note").inner_text()
    assert "Until now the chain acted for alice" in note and "act for you" in note
    scopes = page.locator("#requested-scopes li").all_inner_texts()
    assert len(scopes) == 2
    assert "email" in scopes[0] and "new: the chain did not have this" in scopes[0]
    assert "read" in scopes[1] and "new" not in scopes[1]
    screenshot(page, "consent-1-chain")
    page.click("input[name=allow]")

    page.wait_for_url(callback.uri + "?**")
    code = code_from(page.url, "browser-user")
    assert callback.received == [page.url]
    step = lifecycle.find_step(code)
    assert step.kind == ChainedGrant.Kind.USER and step.parent_id == critic_step.pk
    assert step.depth == critic_step.depth + 1 and step.root_id == critic_step.root_id
    assert step.user == bob and step.scope == "email read"

    # An agent chains from the person's step; it acts for bob from now on.
    writer = make_agent("writer", scopes="openid email read write")
    writer_code, writer_verifier, body = flow.advance(code, writer)
    assert body["depth"] == step.depth + 1
    token = flow.exchange(writer_code, writer_verifier, redirect_uri=callback.uri).json()["access_token"]
    info = flow.introspect(token)
    assert info["username"] == "bob" and info["scope"] == "email read"
    assert info["act"]["sub"] == "writer" and info["act"]["act"]["sub"] == str(bob.pk)
    assert page.problems == [], page.problems
