"""Security review of the browser steps (issue 3): one test per defect found (each
failed before its fix; the docstring says what was wrong), then properties the review
checked that already held (admin, concurrency on PostgreSQL)."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote, urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter
from jwcrypto import jwk
from oauth2_provider.models import get_grant_model

from chain_grant.client.wallet import HeadlessWallet
from chain_grant.core import lifecycle, proofs
from chain_grant.core import wallet_step as siop
from chain_grant.models import ChainedGrant, Wallet, WalletRequest

from .conftest import ISSUER, SECRET, basic_auth
from .factories import run_together
from .test_consent_step import consent_url, form
from .test_consent_step import landing as user_landing
from .test_wallet_step import (
    RESPONSE_URI,
    WalletFlow,
    claims_for,
    craft,
    error_page,
    json_error,
    landing,
    public_of,
)

pytestmark = pytest.mark.django_db
Grant = get_grant_model()
HIDDEN = SafeExceptionReporterFilter.cleansed_substitute


@pytest.fixture
def wflow(client, app):
    return WalletFlow(client, app)


@pytest.fixture
def wallet():
    return HeadlessWallet.generate()


def counts() -> tuple[int, int]:
    return ChainedGrant.objects.count(), Grant.objects.count()


# --- the demo web wallet: a pasted or linked request is attacker-controlled ---------------------------

EVIL_LINK = "javascript:document.title='pwned'"


def _demo_request(base: str, response_uri: str) -> str:
    return "openid://?" + urlencode(
        {
            "response_type": "id_token",
            "response_mode": "direct_post",
            "client_id": base + "/oauth",
            "response_uri": response_uri,
            "nonce": "n" * 43,
            "state": "s" * 43,
        }
    )


@pytest.mark.parametrize("case", ["data: response_uri", "javascript: redirect_uri", "redirect_uri to another site"])
@pytest.mark.django_db(transaction=True)
def test_demo_wallet_posts_over_http_and_follows_only_http_links_of_its_verifier(case, browser_page, live_server):
    """Defect (high, XSS): the demo wallet (/wallet/, on the IdP's origin) posted to any
    response_uri of a pasted or #request= linked request and made whatever redirect_uri
    came back a link: a data: response_uri "answering" {"redirect_uri": "javascript:…"}
    ran script on the IdP's origin (sessions, CSRF tokens, consent pages) after two
    clicks, with no server needed."""
    page, base = browser_page, live_server.url
    if case == "data: response_uri":
        response_uri = "data:application/json," + quote(json.dumps({"redirect_uri": EVIL_LINK}))
    else:  # an endpoint that answers with a javascript: link or a link to another site
        response_uri = base + "/oauth/wallet/elsewhere"
        link = EVIL_LINK if case == "javascript: redirect_uri" else "https://elsewhere.example/landing"
        page.route(
            response_uri,
            lambda route: route.fulfill(
                status=200, content_type="application/json", body=json.dumps({"redirect_uri": link})
            ),
        )
    page.goto(f"{base}/wallet/#request=" + quote(_demo_request(base, response_uri), safe=""))
    page.wait_for_function("document.getElementById('wallet-did').textContent.startsWith('did:jwk:')")
    page.click("#wallet-present")
    page.wait_for_function("document.getElementById('wallet-result').textContent !== ''")

    assert page.locator("#wallet-continue").count() == 0, page.locator("#wallet-continue").get_attribute("href")
    assert page.locator("#wallet-result").get_attribute("class") == "cg-bad"
    assert page.title() != "pwned"


@pytest.mark.parametrize(
    "response_uri",
    [
        "file:///etc/passwd",
        "ftp://testserver/x",
        "data:application/json,{}",
        "javascript:alert(1)",
        "http:///no-host",
        "http://[::1",
    ],
)
def test_headless_wallet_posts_over_http_only(response_uri, wallet):
    """The same rule for chain_grant.wallet.HeadlessWallet (scripts, the example): a
    request's response_uri never reaches urllib's file://, ftp:// or data: handlers."""
    posted = []
    url = "openid://?" + urlencode(
        {
            "response_type": "id_token",
            "response_mode": "direct_post",
            "client_id": ISSUER,
            "response_uri": response_uri,
            "nonce": "n" * 43,
            "state": "s" * 43,
        }
    )
    with pytest.raises(ValueError, match="response_uri"):
        wallet.respond(url, post=lambda uri, data: (posted.append(uri), (200, {"redirect_uri": uri}))[1])
    assert posted == []


def test_headless_wallet_still_answers_its_verifier(wflow, wallet):
    pending = wflow.start()
    landing(wflow.client.get(wallet.respond(pending.url, post=wflow.post)))


# --- the wallet step's authorize request ----------------------------------------------------------------


@pytest.mark.parametrize("redirect_uri", ["http://[::1", "http://[::1/cb", "http://[not-an-ip]/cb"])
def test_unparsable_redirect_uri_is_an_error_page_not_a_500(redirect_uri, wflow):
    """Defect (crash): DOT's redirect_uri_allowed() raises ValueError (urlsplit) for an
    unbalanced or non-IP bracketed host: an HTTP 500 from the unauthenticated wallet
    authorize request. (DOT's own endpoint refuses such a URI in oauthlib first.)"""
    error_page(wflow.open(redirect_uri=redirect_uri))
    assert not WalletRequest.objects.exists()


@pytest.mark.parametrize("prompt", ["none", "none login"])
def test_prompt_none_on_the_wallet_step_is_interaction_required(prompt, wflow):
    """Defect (OIDC Core 3.1.2.1/3.1.2.6): prompt=none must never show a page; the wallet
    step showed its request page (and stored a pending request) for a silent request."""
    query = landing(wflow.open(prompt=prompt), error="interaction_required")
    assert "prompt=none" in query["error_description"]
    assert not WalletRequest.objects.exists()


def test_resource_indicator_on_the_wallet_step_is_refused(wflow):
    """Defect (RFC 8707): the wallet step ignored ``resource``; the client asked for a
    token restricted to one resource server and got one valid at every resource server."""
    query = landing(wflow.open(resource="https://api.example/"), error="invalid_target")
    assert "resource" in query["error_description"]
    assert not WalletRequest.objects.exists()


# --- the user step --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_resource_indicator_on_the_user_step_is_refused(method, flow, client, alice):
    """Defect (RFC 8707): with code= the consent page dropped ``resource`` (DOT's own page
    keeps it in the form and on the grant), so the new code's token was unrestricted."""
    root_code, _ = flow.authorize(alice, scope="openid read")
    url, _ = consent_url(flow.app, root_code, scope="read", resource="https://api.example/")
    client.force_login(alice)
    before = counts()
    response = client.get(url) if method == "GET" else client.post(url, form(url))
    query = user_landing(response, error="invalid_target")
    assert "resource" in query["error_description"]
    assert counts() == before


def test_without_code_dot_keeps_the_resource(flow, client, alice):
    """DOT's own flow (no code=) is untouched: the resource lands on the grant."""
    url, _ = consent_url(flow.app, None, scope="read", resource="https://api.example/")
    client.force_login(alice)
    page = client.get(url)
    assert page.status_code == 200 and 'value="https://api.example/"' in page.content.decode()
    assert not ChainedGrant.objects.exists()


# --- the wallet's account --------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before the presentation", "between presentation and collection"])
def test_disabled_wallet_account_gets_no_code(when, wflow, wallet):
    """Defect: an admin disabling a wallet's account (is_active=False, Django's way to
    block a person; a user step's person cannot log in then) did not stop the wallet:
    every presentation still minted codes and tokens for the disabled account."""
    first = wflow.start()
    wallet.respond(first.url, post=wflow.post)
    landing(wflow.complete(first))
    account = Wallet.objects.get().user
    pending = wflow.start()
    if when == "before the presentation":
        get_user_model().objects.filter(pk=account.pk).update(is_active=False)
    wallet.respond(pending.url, post=wflow.post)
    if when != "before the presentation":
        get_user_model().objects.filter(pk=account.pk).update(is_active=False)
    before = counts()
    query = landing(wflow.complete(pending), error="access_denied")
    assert "disabled" in query["error_description"]
    assert counts() == before


@pytest.mark.parametrize("account", ["has logged in", "staff", "superuser"])
def test_a_wallet_key_never_takes_over_an_account_someone_uses(account, wflow, wallet):
    """Defect (account pre-hijacking): the first presentation of a key links to an
    existing passwordless account named wallet-<thumbprint>, meant for a wallet record an
    admin deleted. Accounts made by SSO or social sign-up have no usable password either:
    whoever could pick that name (the thumbprint is public) got every chain of that wallet
    acting for their account. Only a never-used, non-staff account is relinked now."""
    thumbprint = jwk.JWK(**public_of(wallet.key)).thumbprint()
    User = get_user_model()
    squatter = User(
        username="wallet-" + thumbprint[:40],
        is_staff=account == "staff",
        is_superuser=account == "superuser",
        last_login=timezone.now() if account == "has logged in" else None,
    )
    squatter.set_unusable_password()
    squatter.save()
    pending = wflow.start()
    json_error(
        wflow.direct_post({"id_token": wallet.id_token(pending.request), "state": pending.state}),
        "invalid_request",
        "taken by another account",
    )
    assert not Wallet.objects.exists() and pending.refresh().status == "pending"


@pytest.mark.parametrize("junk", ["    ", "!!!!", "()<>", "%%%%", "\t\t\t\t"])
def test_did_jwk_subject_must_be_base64url(junk, wflow, wallet):
    """Defect: base64.urlsafe_b64decode discards characters outside the alphabet, so
    did:jwk:eyJ…<junk>… named the holder's key and the chain recorded that string as
    the actor: many spellings of one DID in the audit trail (and in relaxed agent mode,
    several agents for one key). did:jwk's method-specific id is base64url, nothing else."""
    pending = wflow.start()
    did = wallet.did[:20] + junk + wallet.did[20:]
    token = craft(wallet.key, claims_for(wallet, pending.request, iss=did, sub=did))
    json_error(wflow.direct_post({"id_token": token, "state": pending.state}), "invalid_grant", "not a did:jwk")
    assert not Wallet.objects.exists()
    assert proofs.did_jwk_thumbprint(did) is None
    assert proofs.did_jwk_thumbprint(wallet.did) == jwk.JWK(**public_of(wallet.key)).thumbprint()


# --- error reports never carry the wallet step's secrets --------------------------------------------------


def test_wallet_endpoints_hide_poll_token_and_id_token_from_error_reports(wflow, wallet):
    """Defect (leak): the poll token (which collects the code) and the id_token were
    posted to csrf-exempt views without sensitive_post_parameters, so a crash report
    (DEBUG page, mail_admins, Sentry) carried them; the token endpoint hides its own."""
    pending = wflow.start()
    posts = {
        "direct_post": (RESPONSE_URI, {"id_token": wallet.id_token(pending.request), "state": pending.state}),
        "status": (pending.path("status"), {"poll": pending.poll}),
        "complete": (pending.path("complete"), {"poll": pending.poll}),
        "cancel": (pending.path("cancel"), {"poll": pending.poll}),
    }
    for name, (url, data) in posts.items():
        response = wflow.client.post(url, data)
        assert response.status_code < 500, name
        cleansed = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
        secrets = {k for k in data if k != "state"}
        assert {k: cleansed[k] for k in secrets} == dict.fromkeys(secrets, HIDDEN), name
        assert cleansed.get("state", pending.state) == pending.state


def test_crash_report_of_the_complete_view_does_not_carry_the_poll_token(wflow, monkeypatch, caplog):
    pending = wflow.start()

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while collecting the code")

    monkeypatch.setattr(siop, "complete", crash)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = Client(raise_request_exception=False).post(pending.path("complete"), {"poll": pending.poll})
    assert response.status_code == 500
    record = next(r for r in caplog.records if r.name == "django.request" and r.exc_info)
    report = ExceptionReporter(record.request, *record.exc_info).get_traceback_text()
    assert "simulated crash" in report and pending.poll not in report


# --- the admin ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/admin/chain_grant/walletrequest/?status__exact=%00",
        "/admin/chain_grant/walletrequest/?status=a%00b",
        "/admin/chain_grant/wallet/?thumbprint=%00",
    ],
)
def test_wallet_admin_filters_with_nul_are_a_400(url, admin_client):
    """Defect (crash, PostgreSQL): a NUL in a Wallet/WalletRequest changelist filter reached
    the database (DataError, an HTTP 500); the chain lists already answered 400."""
    assert admin_client.get(url).status_code == 400


def test_wallet_request_admin_shows_no_secret_digests(admin_client, wflow, wallet):
    pending = wflow.start()
    wallet.respond(pending.url, post=wflow.post)
    row = pending.refresh()
    html = admin_client.get(f"/admin/chain_grant/walletrequest/{row.pk}/change/").content.decode()
    for value in (row.poll_digest, row.response_code_digest, row.state, pending.poll):  # the nonce, spent, is evidence
        assert value not in html


# --- concurrency that already held (PostgreSQL: row locks) --------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_complete_and_cancel_never_both(app):
    for _ in range(5):
        wflow = WalletFlow(Client(), app)
        pending = wflow.start()
        HeadlessWallet.generate().respond(pending.url, post=wflow.post)
        completed, cancelled = run_together(
            lambda p, name: Client().post(p.path(name), {"poll": p.poll}), [(pending, "complete"), (pending, "cancel")]
        )
        row = pending.refresh()
        issued = "code=" in completed.get("Location", "")
        assert issued != ("error=access_denied" in cancelled.get("Location", ""))
        assert row.status == ("done" if issued else "cancelled")
        assert (row.step_id is not None) == issued
    assert ChainedGrant.objects.count() == Grant.objects.count() == WalletRequest.objects.filter(status="done").count()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_consents_wallet_steps_and_hops_in_parallel_respect_max_children(app, alice, make_agent, settings):
    """One live parent, MAX_CHILDREN=1, and at once: consent POSTs, wallet completions
    and agent hops. Exactly one child; every DOT grant has its step (no half-written step)."""
    from .conftest import Flow

    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "MAX_CHILDREN": 1}
    flow = Flow(Client(), app)
    planner = make_agent("planner")
    root, _ = flow.authorize(alice, scope="openid read write")
    parent_code, _, _ = flow.advance(root, planner)
    parent = lifecycle.find_step(parent_code)

    calls = []
    for _ in range(3):  # consent POSTs, each from a logged-in browser that saw the page
        browser = Client()
        browser.force_login(alice)
        url, _ = consent_url(app, parent_code, scope="read")
        assert browser.get(url).status_code == 200
        calls.append((lambda b=browser, u=url: b.post(u, form(u)),))
    for _ in range(3):  # wallet steps, answered and waiting for the browser
        wflow = WalletFlow(Client(), app)
        pending = wflow.start(code=parent_code, scope="read")
        HeadlessWallet.generate().respond(pending.url, post=wflow.post)
        calls.append((lambda p=pending: Client().post(p.path("complete"), {"poll": p.poll}),))
    for i in range(3):  # agent hops
        agent = make_agent(f"helper{i}")
        data = {
            "grant_type": "code_chain",
            "authorization_code": parent_code,
            "id_token": agent.proof(parent_code, aud=flow.issuer),
            "code_challenge": "c" * 43,
            "code_challenge_method": "S256",
        }
        calls.append(
            (lambda d=data: Client().post("/oauth/token", d, HTTP_AUTHORIZATION=basic_auth(app.client_id, SECRET)),)
        )

    responses = run_together(lambda call: call(), calls)

    assert all(r.status_code < 500 for r in responses), [r.status_code for r in responses]
    assert ChainedGrant.objects.filter(parent=parent).count() == 1
    parent.refresh_from_db()
    assert parent.children_count == 1
    assert ChainedGrant.objects.count() == Grant.objects.count() == 3  # root, planner, one child


# --- RFC 9207: one issuer in every authorization response -----------------------------------------------


@pytest.mark.parametrize("outcome", ["code", "cancelled"])
def test_wallet_step_responses_carry_exactly_one_iss(outcome, client, make_app, wallet):
    """Defect (RFC 9207 §2): a registered redirect_uri may carry a query; one with its own
    ``iss`` got the server's appended next to it (two issuers, the mix-up defence made
    ambiguous). DOT's own responses (and the user step's) drop it first."""
    from urllib.parse import parse_qs, urlparse

    registered = "http://127.0.0.1:8765/oauth-callback?tenant=7&iss=https%3A%2F%2Fattacker.example"
    wflow = WalletFlow(client, make_app("query-client", redirect_uris=registered))
    pending = wflow.start(redirect_uri=registered)
    if outcome == "code":
        wallet.respond(pending.url, post=wflow.post)
        response = wflow.complete(pending)
    else:
        response = wflow.cancel(pending)
    assert response.status_code == 302
    query = parse_qs(urlparse(response["Location"]).query)
    assert query["iss"] == [ISSUER] and query["tenant"] == ["7"] and query["state"] == ["client-state"]
    assert ("code" in query) == (outcome == "code")
