"""The wallet step (DESIGN §6, issue 3): response_type=id_token on the authorize
endpoint, the wallet's direct_post, and the browser collecting the code. One test
per rule, through the real endpoints (Django's test client) and the headless wallet."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from jwcrypto import jwk, jws
from oauth2_provider.models import get_grant_model

from chain_grant.client import generate_key, pkce_pair
from chain_grant.client.jose import JWK_THUMBPRINT_URI, b64url, did_jwk
from chain_grant.client.wallet import HeadlessWallet, parse_request_url, request_url_from_html
from chain_grant.core import integrity, lifecycle, steps
from chain_grant.models import ChainedGrant, Wallet, WalletRequest

from .conftest import ISSUER, REDIRECT_URI, SECRET, basic_auth
from .factories import run_together

pytestmark = pytest.mark.django_db
Grant = get_grant_model()
RESPONSE_URI = "http://testserver/oauth/wallet/response"


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


@dataclass
class Pending:
    """A wallet request as the browser saw it."""

    page: object
    url: str  # the openid:// link
    request: dict  # its parameters
    poll: str
    row: WalletRequest

    @property
    def state(self) -> str:
        return self.request["state"]

    def path(self, name: str) -> str:
        return reverse(f"oauth2_provider:chain-wallet-{name}", args=[self.row.pk])

    def refresh(self) -> WalletRequest:
        self.row.refresh_from_db()
        return self.row


class WalletFlow:
    """A browser (Django test client) and a headless wallet posting through it."""

    def __init__(self, client, app, prefix="/oauth"):
        self.client, self.app, self.prefix = client, app, prefix
        self.verifier, self.challenge = pkce_pair()

    def params(self, **extra):
        params = {
            "client_id": self.app.client_id,
            "redirect_uri": REDIRECT_URI,
            "response_type": "id_token",
            "scope": "openid read write",
            "state": "client-state",
            "client_metadata": "{}",
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }
        params.update(extra)
        return {k: v for k, v in params.items() if v is not None}

    def open(self, **extra):
        return self.client.get(f"{self.prefix}/authorize/?" + urlencode(self.params(**extra), doseq=True))

    def request_url(self, **extra) -> str:
        page = self.open(**extra)
        assert page.status_code == 200, page.content
        return request_url_from_html(page.content.decode())

    def start(self, **extra) -> Pending:
        page = self.open(**extra)
        assert page.status_code == 200, page.content[:500]
        url = request_url_from_html(page.content.decode())
        request = parse_request_url(url)
        return Pending(page, url, request, self.poll_token(page), WalletRequest.objects.get(state=request["state"]))

    def post(self, url, data):
        response = self.client.post(url, data)
        return response.status_code, response.json()

    def direct_post(self, data: dict):
        return self.client.post(RESPONSE_URI, data)

    def status(self, pending: Pending, poll=None):
        return self.client.post(pending.path("status"), {"poll": pending.poll if poll is None else poll})

    def complete(self, pending: Pending, poll=None):
        return self.client.post(pending.path("complete"), {"poll": pending.poll if poll is None else poll})

    def cancel(self, pending: Pending):
        return self.client.post(pending.path("cancel"), {"poll": pending.poll})

    @staticmethod
    def poll_token(page) -> str:
        html = page.content.decode()
        start = html.index('name="poll" value="') + len('name="poll" value="')
        return html[start : html.index('"', start)]

    def exchange(self, code, verifier=None):
        return self.client.post(
            "/oauth/token/",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier or self.verifier,
            },
            HTTP_AUTHORIZATION=basic_auth(self.app.client_id, SECRET),
        )


@pytest.fixture
def wflow(client, app):
    return WalletFlow(client, app)


@pytest.fixture
def wallet():
    return HeadlessWallet.generate()


@pytest.fixture
def pending(wflow):
    return wflow.start()


def landing(response, error=None) -> dict:
    """The client's redirect (state and RFC 9207 iss asserted); its query."""
    assert response.status_code == 302, response.content[:500]
    location = response["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    assert query.get("state") == "client-state" and query.get("iss") == ISSUER, query
    if error:
        assert query.get("error") == error and query.get("error_description"), query
        assert "code" not in query
    else:
        assert "error" not in query and query.get("code"), query
    return query


def error_page(response, status=400):
    assert response.status_code == status, response.content[:300]
    assert "Location" not in response
    assert "no-store" in response["Cache-Control"]
    assert b'id="wallet-error"' in response.content


def json_error(response, error, fragment, status=400) -> dict:
    assert response.status_code == status, response.content[:300]
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    assert fragment in body["error_description"], body
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
    query = landing(wflow.open(client_metadata=metadata), error="invalid_request")
    assert fragment in query["error_description"]
    assert not WalletRequest.objects.exists()


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": "nobody"},
        {"client_id": "chain\x00client"},
        {"client_id": None},
        {"redirect_uri": "https://evil.example/cb"},
        {"redirect_uri": REDIRECT_URI + "\x00"},
        {"state": ["a", "b"]},
    ],
    ids=[
        "unknown client",
        "NUL client_id",
        "no client_id",
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
    query = landing(wflow.open(**params), error=error)
    assert fragment in query["error_description"]
    assert not WalletRequest.objects.exists()


def test_request_from_a_client_not_enabled_for_chains(client, make_app):
    plain = WalletFlow(client, make_app("plain-client", enabled=False))
    query = landing(plain.open(), error="unauthorized_client")
    assert "wallet step" in query["error_description"]
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
    landing(wflow.client.get(redirect))


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
    landing(wflow.client.get(redirect))
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
    landing(wflow.complete(pending))
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
    query = landing(wflow.complete(pending))
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
    query = landing(wflow.client.get(path))
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
    query = landing(wflow.complete(pending), error="access_denied")
    assert "expired" in query["error_description"]
    nothing_issued()


def test_cancel(wflow, pending, wallet):
    query = landing(wflow.cancel(pending), error="access_denied")
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
    landing(wflow.complete(pending))
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
    query = landing(wflow.complete(pending))
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
    step = lifecycle.find_step(landing(wflow.complete(pending))["code"])
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
    query = landing(wflow.complete(pending), error="access_denied")
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
    query = landing(wflow.open(code=code), error="invalid_request")
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
    landing(wflow.complete(first))
    account = Wallet.objects.get().user
    assert account.username.startswith("wallet-") and not account.has_usable_password()

    second = wflow.start()  # the same key, now as a JWK thumbprint URI
    public = public_of(wallet.key)
    sub = JWK_THUMBPRINT_URI + jwk.JWK(**public).thumbprint()
    token = craft(wallet.key, claims_for(wallet, second.request, iss=sub, sub=sub, sub_jwk=public))
    assert wflow.direct_post({"id_token": token, "state": second.state}).status_code == 200
    step = lifecycle.find_step(landing(wflow.complete(second))["code"])
    assert Wallet.objects.count() == 1 and step.user == account and step.subject == sub
    assert Wallet.objects.get().subject == sub

    third = wflow.start()  # another key, another account
    HeadlessWallet.generate().respond(third.url, post=wflow.post)
    landing(wflow.complete(third))
    assert Wallet.objects.count() == 2
    assert get_user_model().objects.filter(username__startswith="wallet-").count() == 2


def test_introspection_of_wallet_chain_tokens(wflow, wallet, flow, planner):
    pending = wflow.start()
    wallet.respond(pending.url, post=wflow.post)
    code = landing(wflow.complete(pending))["code"]
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
    landing(codes[0])
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


def test_client_disabled_before_completion(wflow, pending, wallet):
    wallet.respond(pending.url, post=wflow.post)
    wflow.app.chain_client.code_chain_enabled = False
    wflow.app.chain_client.save()
    query = landing(wflow.complete(pending), error="unauthorized_client")
    assert "may not" in query["error_description"]
    nothing_issued()


def test_wallet_account_deleted_before_completion(wflow, pending, wallet):
    wallet.respond(pending.url, post=wflow.post)
    Wallet.objects.get().user.delete()
    query = landing(wflow.complete(pending), error="access_denied")
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
