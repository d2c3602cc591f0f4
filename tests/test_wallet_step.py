"""The wallet step (docs/architecture.md, issue 3): response_type=id_token on the authorize
endpoint, the wallet's direct_post, and the browser collecting the code. One test
per rule, through the real endpoints (Django's test client) and the headless wallet."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.views.debug import SafeExceptionReporterFilter
from jwcrypto import jwk, jws
from oauth2_provider.models import get_grant_model

from chain_grant.client import generate_key
from chain_grant.client.jose import JWK_THUMBPRINT_URI, b64url, did_jwk
from chain_grant.client.wallet import HeadlessWallet, parse_request_url, request_url_from_html
from chain_grant.core import integrity, lifecycle, proofs, steps
from chain_grant.core import wallet_step as siop
from chain_grant.models import ChainClient, ChainedGrant, Wallet, WalletRequest
from tests.factories import run_together
from tests.helpers import (
    ISSUER,
    REDIRECT_URI,
    RESPONSE_URI,
    WalletFlow,
    assert_error,
    counts,
    crash_report,
    wallet_landing,
)

pytestmark = pytest.mark.django_db
Grant = get_grant_model()
HIDDEN = SafeExceptionReporterFilter.cleansed_substitute


# --- helpers --------------------------------------------------------------------------------------


def craft(key: jwk.JWK | None, claims: dict, header: dict | None = None, signature: bytes = b"") -> str:
    """A compact JWS with any header and claims; without a key (or with ``alg`` none)
    its signature is ``signature`` (default: empty)."""
    header = {"alg": "ES256", "typ": "JWT", **(header or {})}
    payload = json.dumps(claims, separators=(",", ":"))
    if key is None or header["alg"] == "none":
        return f"{b64url(json.dumps(header).encode())}.{b64url(payload.encode())}.{b64url(signature)}"
    token = jws.JWS(payload.encode())
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return token.serialize(compact=True)


def claims_for(wallet: HeadlessWallet, request: dict, **overrides) -> dict:
    """A valid self-issued id_token's claims for ``request``; None removes a claim."""
    now = int(time.time())
    claims = {
        "iss": wallet.did,
        "sub": wallet.did,
        "aud": request["client_id"],
        "nonce": request["nonce"],
        "iat": now,
        "exp": now + 120,
        "jti": f"j-{time.monotonic_ns()}",
        **overrides,
    }
    return {k: v for k, v in claims.items() if v is not None}


def public_of(key: jwk.JWK) -> dict:
    public = key.export_public(as_dict=True)
    public.pop("kid", None)
    return public


@pytest.fixture
def pending(wflow):
    return wflow.start()


def error_page(response, status=400):
    assert response.status_code == status, response.content[:300]
    assert "Location" not in response
    assert "no-store" in response["Cache-Control"]
    assert b'id="wallet-error"' in response.content


def json_error(response, error, fragment, status=400) -> dict:
    """The wallet endpoints' JSON error: exactly error and error_description, not cached."""
    body = assert_error(response, status, error, fragment)
    assert set(body) == {"error", "error_description"}, body
    assert "no-store" in response["Cache-Control"]
    return body


def nothing_issued():
    assert not ChainedGrant.objects.exists()
    assert not Grant.objects.exists()


# --- the request page -------------------------------------------------------------------------------


def test_request_page_and_pending_row(wflow):
    page = wflow.open(
        client_metadata=json.dumps({"client_name": "Demo RP", "logo_uri": "https://rp/logo.png"}), nonce="oidc-nonce-1"
    )
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    html = page.content.decode()
    url = request_url_from_html(html)
    assert url.startswith("openid://?")
    assert '<div class="cg-qr" id="wallet-qr"' in html and "<svg" in html.split('id="wallet-qr"')[1][:400]
    request = parse_request_url(url)
    assert request["response_type"] == "id_token" and request["response_mode"] == "direct_post"
    assert request["scope"] == "openid" and request["client_id"] == ISSUER
    assert request["response_uri"] == RESPONSE_URI
    metadata = json.loads(request["client_metadata"])
    assert "did:jwk" in metadata["subject_syntax_types_supported"]
    assert "none" not in metadata["id_token_signing_alg_values_supported"]
    row = WalletRequest.objects.get()
    assert (row.state, row.nonce) == (request["state"], request["nonce"])
    assert row.status == "pending" and row.application == wflow.app and row.redirect_uri == REDIRECT_URI
    assert row.client_state == "client-state" and row.scope == "openid read write" and row.parent is None
    assert row.client_metadata == {"client_name": "Demo RP", "logo_uri": "https://rp/logo.png"}
    assert (row.code_challenge, row.code_challenge_method, row.oidc_nonce) == (wflow.challenge, "S256", "oidc-nonce-1")
    lifetime = (row.expires - row.created).total_seconds()
    assert lifetime == 300 and row.created <= timezone.now() < row.expires
    assert row.poll_digest and wflow.poll_token(page) not in (row.poll_digest, row.state)
    nothing_issued()


@pytest.mark.parametrize(
    "metadata, fragment",
    [
        ("not json", "JSON object"),
        ("[1, 2]", "JSON object"),
        ('"a string"', "JSON object"),
        ('{"a": 1.5}', "JSON object"),
        ('{"a": "\\u0000"}', "JSON object"),
        (json.dumps({"pad": "x" * 5000}), "too large"),
    ],
)
def test_request_client_metadata_must_be_a_json_object(metadata, fragment, wflow):
    query = wallet_landing(wflow.open(client_metadata=metadata), error="invalid_request")
    assert fragment in query["error_description"]
    assert not WalletRequest.objects.exists()


@pytest.mark.parametrize(
    "params",
    [
        {"redirect_uri": "https://evil.example/cb"},
        {"redirect_uri": REDIRECT_URI + "\x00"},
        {"state": ["a", "b"]},
    ],
    ids=[
        "unregistered redirect_uri",
        "NUL redirect_uri",
        "duplicate state",
    ],
)
def test_request_refused_without_redirect(params, wflow):
    error_page(wflow.open(**params))
    assert not WalletRequest.objects.exists()


@pytest.mark.parametrize(
    "params, error, fragment",
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request", "challenge required"),
        ({"code_challenge_method": "plain"}, "invalid_request", "plain"),
        ({"code_challenge": "short"}, "invalid_request", "43 to 128"),
        ({"scope": "openid teleport"}, "invalid_scope", "teleport"),
        ({"code": "no-such-code"}, "invalid_request", steps.PREVIOUS_CODE_REFUSED),
        ({"code": "x\x00y"}, "invalid_request", steps.PREVIOUS_CODE_REFUSED),
        ({"code": "A" * 20000}, "invalid_request", steps.PREVIOUS_CODE_REFUSED),
    ],
    ids=[
        "no PKCE",
        "plain PKCE",
        "bad challenge",
        "unknown scope",
        "unknown previous code",
        "NUL previous code",
        "long previous code",
    ],
)
def test_request_refused_with_error_redirect(params, error, fragment, wflow):
    query = wallet_landing(wflow.open(**params), error=error)
    assert fragment in query["error_description"]
    assert not WalletRequest.objects.exists()


@pytest.mark.parametrize("client_id", ["nobody", "chain\x00client", None])
def test_an_unknown_client_gets_dots_authorize(client_id, wflow):
    """Not a wallet client: DOT's authorize answers (its login page first), not the wallet step."""
    response = wflow.open(client_id=client_id)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not WalletRequest.objects.exists()


def test_a_client_not_enabled_for_chains_gets_dots_implicit_flow(client, make_app, alice):
    """response_type=id_token from a client that is not a wallet client is DOT's flow,
    unchanged: here DOT refuses id_token for an authorization-code client itself."""
    plain = WalletFlow(client, make_app("plain-client", enabled=False))
    assert "/accounts/login/" in plain.open()["Location"]
    client.force_login(alice)
    query = parse_qs(urlparse(plain.open()["Location"]).fragment or urlparse(plain.open()["Location"]).query)
    assert query["error"] == ["unauthorized_client"]
    assert "wallet step" not in query.get("error_description", [""])[0]
    assert not WalletRequest.objects.exists()


def test_the_wallet_switch_of_a_chain_client_hands_id_token_back_to_dot(wflow, app, alice, client):
    ChainClient.objects.filter(application=app).update(wallet_step=False)
    assert "/accounts/login/" in wflow.open()["Location"]
    assert not WalletRequest.objects.exists()


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("state", "a\x00b", "NUL"),
        ("nonce", "a\x00b", "NUL"),
        ("nonce", "n" * 256, "longer than 255"),
    ],
)
def test_request_with_unstorable_client_values(field, value, fragment, wflow):
    response = wflow.open(**{field: value})
    assert response.status_code == 302
    query = parse_qs(urlparse(response["Location"]).query)
    assert query["error"] == ["invalid_request"] and fragment in query["error_description"][0]
    assert query["state"] == [value if field == "state" else "client-state"]
    assert not WalletRequest.objects.exists()


# --- the wallet's direct_post -----------------------------------------------------------------------


def test_did_jwk_presentations_are_accepted(wflow, pending):
    for kty in ("EC", "RSA", "OKP"):
        wallet = HeadlessWallet.generate(kty)
        p = wflow.start() if kty != "EC" else pending
        response = wflow.direct_post({"id_token": wallet.id_token(p.request), "state": p.state})
        assert response.status_code == 200 and "no-store" in response["Cache-Control"]
        redirect = response.json()["redirect_uri"]
        assert redirect.startswith(f"http://testserver{p.path('complete')}?response_code=")
        row = p.refresh()
        assert row.status == "verified" and row.wallet.subject == wallet.did and row.last_error == ""
    nothing_issued()  # the code is created only when the browser collects it


def test_jwk_thumbprint_subject_with_sub_jwk_is_accepted(wflow, pending, wallet):
    public = public_of(wallet.key)
    sub = JWK_THUMBPRINT_URI + jwk.JWK(**public).thumbprint()
    token = craft(wallet.key, claims_for(wallet, pending.request, iss=sub, sub=sub, sub_jwk=public))
    assert wflow.direct_post({"id_token": token, "state": pending.state}).status_code == 200
    assert pending.refresh().wallet.thumbprint == jwk.JWK(**public).thumbprint()


def test_aud_may_be_a_list_naming_the_verifier(wflow, pending, wallet):
    token = craft(wallet.key, claims_for(wallet, pending.request, aud=["https://other.example", ISSUER]))
    assert wflow.direct_post({"id_token": token, "state": pending.state}).status_code == 200


def _other():
    return generate_key("EC")


def _private_did(w, r):
    private = w.key.export_private(as_dict=True)
    private.pop("kid", None)
    did = "did:jwk:" + b64url(json.dumps(private).encode())
    return craft(w.key, claims_for(w, r, iss=did, sub=did))


def _symmetric_did(w, r):
    key = jwk.JWK.generate(kty="oct", size=256)
    did = "did:jwk:" + b64url(json.dumps(key.export(as_dict=True)).encode())
    return craft(key, claims_for(w, r, iss=did, sub=did), {"alg": "HS256"})


def _thumbprint(w, r, tp_key=None, sub_jwk="public"):
    sub = JWK_THUMBPRINT_URI + jwk.JWK(**public_of(tp_key or w.key)).thumbprint()
    extra = {"public": public_of(w.key), "private": w.key.export_private(as_dict=True), "none": None}[sub_jwk]
    return craft(w.key, claims_for(w, r, iss=sub, sub=sub, sub_jwk=extra))


def _hs256_confusion(w, r):
    """HS256 keyed with the wallet's public JWK (the classic key confusion)."""
    key = jwk.JWK(kty="oct", k=b64url(json.dumps(public_of(w.key)).encode()))
    return craft(key, claims_for(w, r), {"alg": "HS256"})


def _es256k(w, r):
    key = jwk.JWK.generate(kty="EC", crv="secp256k1")
    did = did_jwk(public_of(key))
    return craft(key, claims_for(w, r, iss=did, sub=did), {"alg": "ES256K"})


def _now():
    return int(time.time())


G, R = "invalid_grant", "invalid_request"
BAD_ID_TOKENS = {
    # subject and key
    "iss != sub": (
        lambda w, r: craft(w.key, claims_for(w, r, iss=HeadlessWallet.generate().did)),
        G,
        "iss must equal sub",
    ),
    "no sub": (lambda w, r: craft(w.key, claims_for(w, r, sub=None)), G, "sub is missing"),
    "sub not a key id": (
        lambda w, r: craft(w.key, claims_for(w, r, iss="did:web:x.example", sub="did:web:x.example")),
        G,
        "did:jwk or a JWK thumbprint URI",
    ),
    "did:jwk of a private key": (_private_did, G, "not a did:jwk of a public key"),
    "did:jwk of a symmetric key": (_symmetric_did, G, "not a did:jwk of a public key"),
    "did:jwk of garbage": (
        lambda w, r: craft(w.key, claims_for(w, r, iss="did:jwk:e30", sub="did:jwk:e30")),
        G,
        "not a did:jwk of a public key",
    ),
    "thumbprint mismatch": (lambda w, r: _thumbprint(w, r, tp_key=_other()), G, "not the thumbprint of sub_jwk"),
    "thumbprint without sub_jwk": (lambda w, r: _thumbprint(w, r, sub_jwk="none"), G, "sub_jwk"),
    "thumbprint with a private sub_jwk": (lambda w, r: _thumbprint(w, r, sub_jwk="private"), G, "sub_jwk"),
    "signed by another key": (lambda w, r: craft(_other(), claims_for(w, r)), G, "signature is invalid"),
    # algorithm
    "alg none": (lambda w, r: craft(None, claims_for(w, r), {"alg": "none"}), G, "'none' is not allowed"),
    "alg HS256 (key confusion)": (_hs256_confusion, G, "'HS256' is not allowed"),
    "alg not in the allow-list": (_es256k, G, "'ES256K' is not allowed"),
    "alg missing": (lambda w, r: craft(None, claims_for(w, r), {"alg": None}), G, "None is not allowed"),
    "crit header": (
        lambda w, r: craft(None, claims_for(w, r), {"crit": ["exp"], "exp": 1}, b"s" * 64),
        G,
        "critical",
    ),  # refused before the signature is even checked
    # audience and nonce
    "wrong aud": (lambda w, r: craft(w.key, claims_for(w, r, aud="https://rp.example")), G, "audience"),
    "no aud": (lambda w, r: craft(w.key, claims_for(w, r, aud=None)), G, "audience"),
    "wrong nonce": (lambda w, r: craft(w.key, claims_for(w, r, nonce="n" * 43)), G, "nonce"),
    "no nonce": (lambda w, r: craft(w.key, claims_for(w, r, nonce=None)), G, "nonce"),
    "nonce not a string": (lambda w, r: craft(w.key, claims_for(w, r, nonce=123)), G, "nonce"),
    # times
    "iat in the future": (
        lambda w, r: craft(w.key, claims_for(w, r, iat=_now() + 3600, exp=_now() + 3700)),
        G,
        "future",
    ),
    "exp in the past": (lambda w, r: craft(w.key, claims_for(w, r, iat=_now() - 500, exp=_now() - 100)), G, "expired"),
    "lifetime too long": (lambda w, r: craft(w.key, claims_for(w, r, iat=_now(), exp=_now() + 601)), G, "too long"),
    "no iat": (lambda w, r: craft(w.key, claims_for(w, r, iat=None)), G, "'iat'"),
    "exp a string": (lambda w, r: craft(w.key, claims_for(w, r, exp="tomorrow")), G, "'exp'"),
    "exp a float": (lambda w, r: craft(w.key, {**claims_for(w, r), "exp": _now() + 60.5}), R, "base64url JSON"),
    # syntax
    "empty": (lambda w, r: "", R, "Missing"),
    "not a JWS": (lambda w, r: "not-a-jwt", R, "compact JWS"),
    "JWE-like (5 parts)": (lambda w, r: "a.b.c.d.e", R, "compact JWS"),
    "payload not JSON": (lambda w, r: "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln", R, "base64url JSON"),
    "payload a list": (lambda w, r: craft(w.key, [1]), R, "JSON objects"),
    "NUL byte": (lambda w, r: w.id_token(r)[:20] + "\x00" + w.id_token(r)[20:], R, "compact JWS"),
    "NUL in a claim": (lambda w, r: craft(w.key, claims_for(w, r, name="a\x00b")), R, "base64url JSON"),
    "oversize": (lambda w, r: craft(w.key, claims_for(w, r, pad="x" * 9000)), R, "too large"),
}


@pytest.mark.parametrize("case", BAD_ID_TOKENS)
def test_bad_id_token_is_refused_and_the_request_stays_open(case, wflow, pending, wallet):
    make, error, fragment = BAD_ID_TOKENS[case]
    body = json_error(
        wflow.direct_post({"id_token": make(wallet, pending.request), "state": pending.state}), error, fragment
    )
    row = pending.refresh()
    assert row.status == "pending" and row.wallet is None and row.response_code_digest == ""
    assert row.last_error == body["error_description"]
    assert wflow.status(pending).json() == {"status": "pending", "last_error": body["error_description"]}
    assert not Wallet.objects.exists() and not get_user_model().objects.filter(username__startswith="wallet-")
    # whoever saw the QR code cannot end the request: the holder's correct answer still works
    redirect = wallet.respond(pending.url, post=wflow.post)
    assert wflow.status(pending).json() == {"status": "verified"}
    wallet_landing(wflow.client.get(redirect))


STATE_ERRORS = {
    "unknown state": lambda p, t: {"id_token": t, "state": "x" * 43},
    "no state": lambda p, t: {"id_token": t},
    "empty state": lambda p, t: {"id_token": t, "state": ""},
    "NUL in state": lambda p, t: {"id_token": t, "state": p.state[:5] + "\x00" + p.state[5:]},
    "overlong state": lambda p, t: {"id_token": t, "state": p.state * 3},
    "duplicate state": lambda p, t: {"id_token": t, "state": [p.state, p.state]},
    "duplicate id_token": lambda p, t: {"id_token": [t, t], "state": p.state},
    "no id_token": lambda p, t: {"state": p.state},
}


@pytest.mark.parametrize("case", STATE_ERRORS)
def test_bad_direct_post_parameters(case, wflow, pending, wallet):
    data = STATE_ERRORS[case](pending, wallet.id_token(pending.request))
    fragment = {
        "duplicate state": "more than once",
        "duplicate id_token": "more than once",
        "no id_token": "Missing",
    }.get(case, "state")
    json_error(wflow.direct_post(data), "invalid_request", fragment)
    assert pending.refresh().status == "pending"
    assert wallet.respond(pending.url, post=wflow.post)  # still answerable


def test_direct_post_with_a_huge_body_is_a_json_error(wflow, pending, wallet):
    data = {"id_token": wallet.id_token(pending.request), "state": pending.state, "pad": "x" * 3_000_000}
    json_error(wflow.direct_post(data), "invalid_request", "too large")
    assert pending.refresh().status == "pending"


def test_direct_post_only_takes_posts(wflow, pending):
    assert wflow.client.get(RESPONSE_URI, {"state": pending.state}).status_code == 405


def test_nonce_is_single_use(wflow, pending, wallet):
    redirect = wallet.respond(pending.url, post=wflow.post)
    again = wflow.direct_post({"id_token": wallet.id_token(pending.request), "state": pending.state})
    json_error(again, "invalid_request", "already answered")
    wallet_landing(wflow.client.get(redirect))
    after_done = wflow.direct_post({"id_token": wallet.id_token(pending.request), "state": pending.state})
    json_error(after_done, "invalid_request", "already answered")
    assert ChainedGrant.objects.count() == 1


def test_expired_request_refuses_the_wallet(wflow, pending, wallet):
    WalletRequest.objects.filter(pk=pending.row.pk).update(expires=timezone.now() - timedelta(seconds=1))
    response = wflow.direct_post({"id_token": wallet.id_token(pending.request), "state": pending.state})
    json_error(response, "invalid_request", "expired")
    assert pending.refresh().status == "pending"
    assert wflow.status(pending).json() == {"status": "expired"}


# --- the browser side -------------------------------------------------------------------------------


def test_status_poll_through_the_lifecycle(wflow, pending, wallet):
    assert wflow.status(pending).json() == {"status": "pending"}
    redirect = wallet.respond(pending.url, post=wflow.post)
    response = wflow.status(pending)
    assert response.json() == {"status": "verified"} and "no-store" in response["Cache-Control"]
    wallet_landing(wflow.complete(pending))
    assert wflow.status(pending).json() == {"status": "done"}
    error_page(wflow.client.get(redirect))  # the wallet's same-device link is spent too


@pytest.mark.parametrize("poll", ["", "wrong", "x\x00y"])
def test_status_with_a_wrong_poll_token_is_404(poll, wflow, pending):
    response = wflow.status(pending, poll=poll)
    json_error(response, "invalid_request", "Unknown wallet request", status=404)


def test_status_of_an_unknown_request_is_404(wflow, pending):
    url = reverse("oauth2_provider:chain-wallet-status", args=["00000000-0000-0000-0000-000000000000"])
    assert wflow.client.post(url, {"poll": pending.poll}).status_code == 404


def test_complete_with_the_poll_token(wflow, pending, wallet):
    wallet.respond(pending.url, post=wflow.post)
    query = wallet_landing(wflow.complete(pending))
    step = lifecycle.find_step(query["code"])
    assert (step.kind, step.depth, step.parent_id, step.subject) == ("wallet", 0, None, wallet.did)
    row = pending.refresh()
    assert row.status == "done" and row.step == step and row.completed_at
    token = wflow.exchange(query["code"])
    assert token.status_code == 200 and token.json()["scope"] == "openid read write"
    error_page(wflow.complete(pending))  # a second completion


def test_complete_with_the_response_code(wflow, pending, wallet):
    redirect = wallet.respond(pending.url, post=wflow.post)
    assert "response_code=" in redirect
    path = urlparse(redirect).path + "?" + urlparse(redirect).query
    query = wallet_landing(wflow.client.get(path))
    assert lifecycle.find_step(query["code"]).kind == "wallet"
    error_page(wflow.client.get(path))
    error_page(wflow.complete(pending))


@pytest.mark.parametrize("secret", ["wrong poll", "wrong response_code", "response_code as poll"])
def test_complete_with_a_wrong_secret(secret, wflow, pending, wallet):
    redirect = wallet.respond(pending.url, post=wflow.post)
    response_code = parse_qs(urlparse(redirect).query)["response_code"][0]
    if secret == "wrong poll":
        response = wflow.complete(pending, poll="nope")
    elif secret == "wrong response_code":
        response = wflow.client.get(pending.path("complete"), {"response_code": "nope"})
    else:
        response = wflow.complete(pending, poll=response_code)
    error_page(response)
    assert pending.refresh().status == "verified"
    nothing_issued()


def test_completing_a_pending_request_is_an_error_page(wflow, pending):
    error_page(wflow.complete(pending))
    assert pending.refresh().status == "pending"
    nothing_issued()


@pytest.mark.parametrize("answered", [False, True])
def test_completing_an_expired_request_tells_the_client(answered, wflow, pending, wallet):
    if answered:
        wallet.respond(pending.url, post=wflow.post)
    WalletRequest.objects.filter(pk=pending.row.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert wflow.status(pending).json() == {"status": "expired"}
    query = wallet_landing(wflow.complete(pending), error="access_denied")
    assert "expired" in query["error_description"]
    nothing_issued()


def test_cancel(wflow, pending, wallet):
    query = wallet_landing(wflow.cancel(pending), error="access_denied")
    assert "cancelled" in query["error_description"]
    assert pending.refresh().status == "cancelled"
    assert wflow.status(pending).json() == {"status": "cancelled"}
    json_error(
        wflow.direct_post({"id_token": wallet.id_token(pending.request), "state": pending.state}),
        "invalid_request",
        "already answered",
    )
    error_page(wflow.complete(pending))
    nothing_issued()


def test_cancel_after_done_is_an_error_page(wflow, pending, wallet):
    wallet.respond(pending.url, post=wflow.post)
    wallet_landing(wflow.complete(pending))
    error_page(wflow.cancel(pending))
    assert pending.refresh().status == "done"


def test_cancel_with_a_wrong_poll_token(wflow, pending):
    error_page(wflow.client.post(pending.path("cancel"), {"poll": "nope"}))
    assert pending.refresh().status == "pending"


# --- the wallet step as a child of an earlier step --------------------------------------------------


@pytest.fixture
def agent_code(flow, alice, planner):
    root, _ = flow.authorize(alice, scope="openid read write")
    code, verifier, _ = flow.advance(root, planner)
    return code, verifier


def test_wallet_step_as_a_child(wflow, wallet, agent_code):
    code, _ = agent_code
    parent = lifecycle.find_step(code)
    pending = wflow.start(code=code, scope="read")
    assert pending.row.parent == parent
    html = pending.page.content.decode()
    assert 'id="chain-steps"' in html and "planner" in html
    wallet.respond(pending.url, post=wflow.post)
    query = wallet_landing(wflow.complete(pending))
    step = lifecycle.find_step(query["code"])
    assert (step.kind, step.depth, step.parent_id, step.root_id) == ("wallet", 2, parent.pk, parent.root_id)
    assert step.user == Wallet.objects.get().user and step.scope == "read"
    parent.refresh_from_db()
    assert parent.children_count == 1
    assert integrity.verify_chain(step.root_id).ok


def test_wallet_step_on_an_ordinary_dot_code(wflow, wallet, flow, alice):
    root_code, _ = flow.authorize(alice, scope="openid read")
    pending = wflow.start(code=root_code, scope="read")
    root = ChainedGrant.objects.get()
    assert pending.row.parent == root and (root.kind, root.user) == ("user", alice)
    wallet.respond(pending.url, post=wflow.post)
    step = lifecycle.find_step(wallet_landing(wflow.complete(pending))["code"])
    assert (step.parent_id, step.depth) == (root.pk, 1)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ("exchanged", "exchanged"),
        ("revoked", "revoked"),
        ("expired", "expired"),
    ],
)
def test_previous_code_spent_before_completion(change, fragment, wflow, wallet, flow, agent_code):
    code, verifier = agent_code
    parent = lifecycle.find_step(code)
    pending = wflow.start(code=code)
    wallet.respond(pending.url, post=wflow.post)
    token = None
    if change == "exchanged":
        token = flow.exchange(code, verifier).json()["access_token"]
    elif change == "revoked":
        lifecycle.revoke_subtree(parent)
    else:
        ChainedGrant.objects.filter(pk=parent.pk).update(expires=timezone.now() - timedelta(seconds=1))
    before = (ChainedGrant.objects.count(), Grant.objects.count())
    query = wallet_landing(wflow.complete(pending), error="access_denied")
    assert fragment in query["error_description"]
    assert (ChainedGrant.objects.count(), Grant.objects.count()) == before
    assert not ChainedGrant.objects.filter(kind="wallet").exists()
    parent.refresh_from_db()
    if change == "exchanged":  # a replay: the subtree and its tokens are revoked
        assert parent.revoked_reason == "authorization code replay"
        assert flow.introspect(token)["active"] is False


def test_exchanged_previous_code_at_authorize_is_refused_without_revocation(wflow, flow, agent_code):
    code, verifier = agent_code
    token = flow.exchange(code, verifier).json()["access_token"]
    query = wallet_landing(wflow.open(code=code), error="invalid_request")
    assert "exchanged" in query["error_description"]
    assert flow.introspect(token)["active"] is True
    assert not WalletRequest.objects.exists()


def test_duplicate_previous_code_at_authorize(wflow, agent_code):
    error_page(wflow.open(code=[agent_code[0], agent_code[0]]))
    assert not WalletRequest.objects.exists()


# --- the wallet's account, and tokens from wallet chains ---------------------------------------------


def test_one_account_per_wallet_key(wflow, wallet):
    first = wflow.start()
    wallet.respond(first.url, post=wflow.post)
    wallet_landing(wflow.complete(first))
    account = Wallet.objects.get().user
    assert account.username.startswith("wallet-") and not account.has_usable_password()

    second = wflow.start()  # the same key, now as a JWK thumbprint URI
    public = public_of(wallet.key)
    sub = JWK_THUMBPRINT_URI + jwk.JWK(**public).thumbprint()
    token = craft(wallet.key, claims_for(wallet, second.request, iss=sub, sub=sub, sub_jwk=public))
    assert wflow.direct_post({"id_token": token, "state": second.state}).status_code == 200
    step = lifecycle.find_step(wallet_landing(wflow.complete(second))["code"])
    assert Wallet.objects.count() == 1 and step.user == account and step.subject == sub
    assert Wallet.objects.get().subject == sub

    third = wflow.start()  # another key, another account
    HeadlessWallet.generate().respond(third.url, post=wflow.post)
    wallet_landing(wflow.complete(third))
    assert Wallet.objects.count() == 2
    assert get_user_model().objects.filter(username__startswith="wallet-").count() == 2


def test_introspection_of_wallet_chain_tokens(wflow, wallet, flow, planner):
    pending = wflow.start()
    wallet.respond(pending.url, post=wflow.post)
    code = wallet_landing(wflow.complete(pending))["code"]
    root = lifecycle.find_step(code)
    account = Wallet.objects.get().user.username
    agent_code, agent_verifier, _ = flow.advance(code, planner)  # an agent acting for the wallet holder

    info = flow.introspect(wflow.exchange(code).json()["access_token"])
    assert info["active"] and info["username"] == account
    assert (info["chain_id"], info["chain_depth"]) == (str(root.pk), 0) and "act" not in info
    info = flow.introspect(flow.exchange(agent_code, agent_verifier).json()["access_token"])
    assert info["username"] == account and info["chain_depth"] == 1
    assert info["act"] == {"sub": "planner"}


# --- concurrency (PostgreSQL: the row locks are what make these hold) -------------------------------

THREADS = 8


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_completions_issue_one_code(app, wallet):
    wflow = WalletFlow(Client(), app)
    pending = wflow.start()
    wallet.respond(pending.url, post=wflow.post)

    responses = run_together(lambda: Client().post(pending.path("complete"), {"poll": pending.poll}), [()] * THREADS)

    codes = [r for r in responses if r.status_code == 302]
    assert len(codes) == 1, [r.status_code for r in responses]
    wallet_landing(codes[0])
    assert sorted(r.status_code for r in responses) == [302] + [400] * (THREADS - 1)
    assert ChainedGrant.objects.count() == 1 and Grant.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_presentations_accept_one(app):
    wflow = WalletFlow(Client(), app)
    pending = wflow.start()
    wallets = [HeadlessWallet.generate() for _ in range(THREADS)]
    data = [({"id_token": w.id_token(pending.request), "state": pending.state},) for w in wallets]

    responses = run_together(lambda d: Client().post(RESPONSE_URI, d), data)

    assert sorted(r.status_code for r in responses) == [200] + [400] * (THREADS - 1)
    assert {r.json()["error"] for r in responses if r.status_code == 400} == {"invalid_request"}
    row = pending.refresh()
    assert row.status == "verified" and Wallet.objects.filter(pk=row.wallet_id).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_first_presentations_of_one_key_make_one_account(app, wallet):
    wflow = WalletFlow(Client(), app)
    requests = [wflow.start() for _ in range(THREADS)]
    data = [({"id_token": wallet.id_token(p.request), "state": p.state},) for p in requests]

    responses = run_together(lambda d: Client().post(RESPONSE_URI, d), data)

    assert [r.status_code for r in responses] == [200] * THREADS, [r.content for r in responses]
    assert Wallet.objects.count() == 1
    assert get_user_model().objects.filter(username__startswith="wallet-").count() == 1


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


def test_client_disabled_before_completion(wflow, pending, wallet):
    wallet.respond(pending.url, post=wflow.post)
    wflow.app.chain_client.code_chain_enabled = False
    wflow.app.chain_client.save()
    query = wallet_landing(wflow.complete(pending), error="unauthorized_client")
    assert "may not" in query["error_description"]
    nothing_issued()


def test_wallet_account_deleted_before_completion(wflow, pending, wallet):
    wallet.respond(pending.url, post=wflow.post)
    Wallet.objects.get().user.delete()
    query = wallet_landing(wflow.complete(pending), error="access_denied")
    assert "no longer exists" in query["error_description"]
    nothing_issued()


def test_presentation_after_the_wallet_record_was_deleted(wflow, wallet):
    first = wflow.start()
    wallet.respond(first.url, post=wflow.post)
    account = Wallet.objects.get().user
    Wallet.objects.all().delete()  # an admin removed the wallet record, not its account
    second = wflow.start()
    response = wflow.direct_post({"id_token": wallet.id_token(second.request), "state": second.state})
    assert response.status_code == 200, response.content
    assert Wallet.objects.get().user == account  # the key's own account, linked again

    # an account someone can log in to is never taken over by a key, whatever its name
    Wallet.objects.all().delete()
    account.set_password("chosen")
    account.save()
    third = wflow.start()
    response = wflow.direct_post({"id_token": wallet.id_token(third.request), "state": third.state})
    json_error(response, "invalid_request", "taken by another account")
    assert not Wallet.objects.exists() and third.refresh().status == "pending"


# --- the request: refused before any page or row ---------------------------------------------


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
    query = wallet_landing(wflow.open(prompt=prompt), error="interaction_required")
    assert "prompt=none" in query["error_description"]
    assert not WalletRequest.objects.exists()


def test_resource_indicator_on_the_wallet_step_is_refused(wflow):
    """Defect (RFC 8707): the wallet step ignored ``resource``; the client asked for a
    token restricted to one resource server and got one valid at every resource server."""
    query = wallet_landing(wflow.open(resource="https://api.example/"), error="invalid_target")
    assert "resource" in query["error_description"]
    assert not WalletRequest.objects.exists()


# --- the wallet and its account ------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before the presentation", "between presentation and collection"])
def test_disabled_wallet_account_gets_no_code(when, wflow, wallet):
    """Defect: an admin disabling a wallet's account (is_active=False, Django's way to
    block a person; a user step's person cannot log in then) did not stop the wallet:
    every presentation still minted codes and tokens for the disabled account."""
    first = wflow.start()
    wallet.respond(first.url, post=wflow.post)
    wallet_landing(wflow.complete(first))
    account = Wallet.objects.get().user
    pending = wflow.start()
    if when == "before the presentation":
        get_user_model().objects.filter(pk=account.pk).update(is_active=False)
    wallet.respond(pending.url, post=wflow.post)
    if when != "before the presentation":
        get_user_model().objects.filter(pk=account.pk).update(is_active=False)
    before = counts()
    query = wallet_landing(wflow.complete(pending), error="access_denied")
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


# --- error reports never carry the wallet step's secrets -----------------------------------------


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
    report = crash_report(caplog)
    assert "simulated crash" in report and pending.poll not in report


# --- RFC 9207: one issuer in every authorization response -----------------------------------------


@pytest.mark.parametrize("outcome", ["code", "cancelled"])
def test_wallet_step_responses_carry_exactly_one_iss(outcome, client, make_app, wallet):
    """Defect (RFC 9207 §2): a registered redirect_uri may carry a query; one with its own
    ``iss`` got the server's appended next to it (two issuers, the mix-up defence made
    ambiguous). DOT's own responses (and the user step's) drop it first."""
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
