"""Property-based fuzzing (hypothesis) of every endpoint an attacker reaches: the token
endpoint (every grant type, code_chain with random and validly signed random proofs),
authorize (logged in and not), the wallet's direct_post, introspection, revocation,
device authorization and the review API, with random parameters, repeated parameters,
random credentials and random Content-Types.

The property: no status ≥ 500; at the OAuth and API endpoints every status ≥ 400
carries a JSON body with ``error``. Requests go through idp_project's real WSGI
application (tests/wsgi_client.py: guard_wsgi and every middleware, as gunicorn runs it).

Bounded: FUZZ_EXAMPLES (default 40) examples per test, no deadline, no example
database; the whole file runs in well under a minute on SQLite."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jwcrypto import jws
from oauth2_provider.models import get_access_token_model, set_token_value

from chain_grant.client import pkce_pair
from chain_grant.client.jose import JWK_THUMBPRINT_URI, code_hash
from chain_grant.client.wallet import HeadlessWallet, parse_request_url, request_url_from_html
from tests.helpers import ISSUER, REDIRECT_URI, SECRET, basic_auth
from tests.wsgi_client import WSGIClient, form

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    database=None,
    # Reproducible in CI; FUZZ_RANDOM=1 explores new examples locally.
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORM = "application/x-www-form-urlencoded"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"

# --- strategies -----------------------------------------------------------------------------

# Any code point (NUL, controls, lone surrogates: sent as their UTF-8 bytes), short.
TEXT = st.text(st.characters(), max_size=40)
ODD = st.sampled_from(
    [
        "",
        "\x00",
        "a\x00b",
        "é" * 40,
        "\ud800",
        "c" * 300,
        "1e5",
        "NaN",
        "null",
        "[]",
        "{}",
        " ",
        "%00",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "-1",
        "99999999999999999999999",
    ]
)
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | TEXT
JSON = st.recursive(JSON_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=6)
CONTENT_TYPES = st.sampled_from(
    [
        FORM,
        FORM,
        FORM,
        FORM + "; charset=utf-8",
        FORM + "; charset=latin-1",
        FORM + "; charset=x-unknown",
        FORM + "; charset=rot13",
        FORM + "; charset=undefined",
        FORM + "; charset=utf-16",
        "multipart/form-data; boundary=xx",
        "multipart/form-data; boundary=xx; charset=hex",
        "multipart/form-data",
        "application/json",
        "text/plain; charset=undefined",
        "text/plain; a*=x-unknown''b",
        "multipart/form-data; boundary*=undefined''x",
        "",
    ]
)

JSON_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-16", "application/json; charset=hex"])


def b64(data: bytes | str) -> str:
    data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dumps(value) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def jws_shaped(draw, key=None, base_claims=None):
    """A compact JWS: random header and claims (around plausible ones), signed with ``key``
    (a valid signature over random content), or with a random signature."""
    header = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "alg": st.sampled_from(["ES256", "RS256", "EdDSA", "HS256", "none", ""]) | JSON,
                "kid": st.just(key["kid"] if key else "k") | JSON,
                "typ": st.just("JWT") | JSON,
                "crit": JSON,
                "b64": st.booleans(),
                "jwk": JSON,
            },
        )
    )
    claims = dict(base_claims or {})
    for name in draw(st.lists(st.sampled_from(["sub", "iss", "aud", "iat", "exp", "jti", "c_hash", "nonce", "x"]))):
        claims[name] = draw(JSON | ODD)
    claims.update(draw(st.dictionaries(TEXT, JSON, max_size=2)))
    payload = dumps(claims)
    if key is not None and draw(st.booleans()):
        header["alg"], header["kid"] = "ES256", key["kid"]
        token = jws.JWS(payload.encode("utf-8", "surrogatepass"))
        try:
            token.add_signature(key, alg="ES256", protected=dumps(header))
            return token.serialize(compact=True)
        except Exception:  # a header jwcrypto itself will not sign (crit, b64, …): send it unsigned
            pass
    return f"{b64(dumps(header))}.{b64(payload)}.{draw(st.sampled_from(['', 'AAAA', b64(os.urandom(64))]))}"


def auth_headers(app):
    return st.one_of(
        st.just({}),
        st.just({"Authorization": basic_auth(app.client_id, SECRET)}),
        st.builds(lambda i, s: {"Authorization": basic_auth(i, s)}, TEXT, TEXT),
        st.builds(lambda t: {"Authorization": "Basic " + t}, TEXT),
        st.builds(lambda t: {"Authorization": "Bearer " + t}, TEXT),
        st.builds(lambda t: {"Authorization": t}, TEXT),
    )


def params_from(draw, names: dict[str, st.SearchStrategy]) -> list[tuple[str, str]]:
    """Some of ``names`` (each from its strategy, or odd text), sometimes repeated, plus
    random extra parameters."""
    pairs = []
    for name in draw(st.lists(st.sampled_from(sorted(names)), unique=True)):
        pairs.append((name, draw(names[name] | TEXT | ODD)))
        if draw(st.integers(0, 9)) == 0:
            pairs.append((name, draw(names[name] | TEXT)))
    pairs.extend(draw(st.lists(st.tuples(TEXT, TEXT), max_size=2)))
    return pairs


def mutated(draw, pairs: list[tuple[str, str]], names: dict[str, st.SearchStrategy]) -> list[tuple[str, str]]:
    """A valid request's parameters with up to three changes: a value replaced (from its
    strategy or odd text), a parameter dropped, repeated, or a random one added."""
    pairs = list(pairs)
    for _ in range(draw(st.integers(0, 3), label="changes")):
        op = draw(st.sampled_from(["replace", "drop", "repeat", "add"]))
        if op == "add" or not pairs:
            pairs.append(draw(st.tuples(st.sampled_from(sorted(names)) | TEXT, TEXT | ODD)))
            continue
        i = draw(st.integers(0, len(pairs) - 1))
        name = pairs[i][0]
        if op == "replace":
            pairs[i] = (name, draw(names.get(name, TEXT) | TEXT | ODD))
        elif op == "drop":
            del pairs[i]
        else:
            pairs.insert(i, (name, draw(names.get(name, TEXT) | st.just(pairs[i][1]))))
    return pairs


def assert_property(response, oauth: bool) -> None:
    event(f"status {response.status}")  # pytest --hypothesis-show-statistics shows the mix
    assert response.status < 500, (response.status, response.body[:500])
    if oauth and response.status >= 400:
        assert response.content_type.startswith("application/json"), (response.status, response.body[:300])
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def wsgi():
    return WSGIClient()


@pytest.fixture
def code(flow, alice):
    return flow.authorize(alice, scope="openid read write")[0]


@pytest.fixture
def staff_token(app):
    staff = get_user_model().objects.create_user("auditor", "a@example.com", "pw", is_staff=True)
    raw = secrets.token_urlsafe(30)
    token = get_access_token_model()(
        user=staff, application=app, scope="chains:read chains:revoke", expires=timezone.now() + timedelta(hours=1)
    )
    set_token_value(token, raw)
    token.save()
    return raw


# --- the properties -------------------------------------------------------------------------

GRANT_TYPES = [
    "code_chain",
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "password",
    DEVICE_CODE,
    "urn:ietf:params:oauth:grant-type:token-exchange",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
]


def plausible_claims(code: str) -> dict:
    now = int(time.time())
    return {
        "sub": "planner",
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_hex(8),
        "c_hash": code_hash(code),
    }


def token_names(app, planner, code: str) -> dict[str, st.SearchStrategy]:
    _, challenge = pkce_pair()
    return {
        "grant_type": st.sampled_from(GRANT_TYPES),
        "authorization_code": st.just(code),
        "code": st.just(code),
        "id_token": jws_shaped(planner.key, plausible_claims(code)) | st.builds(lambda: planner.proof(code)),
        "code_challenge": st.just(challenge),
        "code_challenge_method": st.sampled_from(["S256", "plain"]),
        "code_verifier": st.just("v" * 43),
        "redirect_uri": st.just(REDIRECT_URI),
        "refresh_token": TEXT,
        "device_code": TEXT,
        "scope": st.sampled_from(["openid read", "read write", "read", "chains:read", "introspection"]),
        "client_id": st.just(app.client_id),
        "client_secret": st.just(SECRET),
        "resource": st.just("https://rs.example"),
        "username": st.just("alice"),
        "password": st.just("alice-pw"),
        "subject_token": jws_shaped(planner.key),
    }


@FUZZ
@given(data=st.data())
def test_token_endpoint(data, wsgi, flow, alice, app, planner, code):
    """Every grant type with random parameters; code_chain from a valid hop (a fresh code,
    a valid proof) with up to three changes, proofs random or validly signed over
    random claims about the real code."""
    if data.draw(st.booleans(), label="from a valid code_chain hop"):
        fresh = flow.authorize(alice, scope="openid read write")[0]
        names = token_names(app, planner, fresh)
        _, challenge = pkce_pair()
        valid = [
            ("grant_type", "code_chain"),
            ("authorization_code", fresh),
            ("id_token", planner.proof(fresh)),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]
        pairs = mutated(data.draw, valid, names)
        headers = {"Authorization": basic_auth(app.client_id, SECRET)}
        if data.draw(st.integers(0, 4)) == 0:
            headers = data.draw(auth_headers(app))
        content_type = FORM if data.draw(st.integers(0, 4)) else data.draw(CONTENT_TYPES)
    else:
        names = token_names(app, planner, code)
        pairs = [("grant_type", data.draw(st.sampled_from(GRANT_TYPES) | TEXT))] + params_from(data.draw, names)
        headers, content_type = data.draw(auth_headers(app)), data.draw(CONTENT_TYPES)
    response = wsgi.request(
        "POST",
        data.draw(st.sampled_from(["/oauth/token", "/oauth/token/"])),
        body=form(pairs),
        content_type=content_type,
        headers=headers,
    )
    assert_property(response, oauth=True)


@FUZZ
@given(data=st.data())
def test_authorize(data, wsgi, app, alice, code):
    """GET /oauth/authorize with random parameters (DOT's flow, the user step with a
    previous code, the wallet step), logged in or not: never a 500."""
    _, challenge = pkce_pair()
    names = {
        "client_id": st.just(app.client_id),
        "response_type": st.sampled_from(["code", "id_token", "token", "code id_token", "none"]),
        "redirect_uri": st.just(REDIRECT_URI),
        "scope": st.sampled_from(["openid read", "openid", "read write", "email"]),
        "state": st.just("st"),
        "nonce": st.just("n"),
        "code_challenge": st.just(challenge),
        "code_challenge_method": st.sampled_from(["S256", "plain"]),
        "prompt": st.sampled_from(["none", "login", "consent", "none login"]),
        "code": st.just(code),
        "client_metadata": st.builds(dumps, JSON),
        "claims": st.builds(dumps, JSON),
        "max_age": st.sampled_from(["0", "-1", "1e9"]),
        "request_uri": TEXT,
        "resource": st.just("https://rs.example"),
    }
    wsgi.cookies = {}
    if data.draw(st.booleans(), label="logged in"):
        browser = Client()
        browser.force_login(alice)
        wsgi.cookies = {"sessionid": browser.cookies["sessionid"].value}
    if data.draw(st.booleans(), label="from a valid request"):
        valid = [
            ("client_id", app.client_id),
            ("response_type", data.draw(st.sampled_from(["code", "id_token"]))),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid read"),
            ("state", "st"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]
        if data.draw(st.booleans(), label="a chain step"):
            valid.append(("code", code))
        pairs = mutated(data.draw, valid, names)
    else:
        pairs = params_from(data.draw, names)
    response = wsgi.request(
        "GET",
        data.draw(st.sampled_from(["/oauth/authorize/", "/oauth/authorize"])),
        query=form(pairs).decode(),
        content_type=data.draw(st.none() | CONTENT_TYPES),
    )
    assert_property(response, oauth=False)


def open_wallet_request(client, app) -> dict:
    """A wallet request as an attacker can open one (no login): its openid:// parameters."""
    _, challenge = pkce_pair()
    params = {
        "client_id": app.client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "id_token",
        "scope": "openid read",
        "state": "client-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = client.get("/oauth/authorize/?" + urlencode(params))
    assert page.status_code == 200, page.content[:300]
    return parse_request_url(request_url_from_html(page.content.decode()))


@pytest.fixture
def pending_wallet_request(client, app):
    return open_wallet_request(client, app)


@FUZZ
@given(data=st.data())
def test_wallet_direct_post(data, wsgi, client, app, pending_wallet_request):
    """The wallet's direct_post: the real state or random ones, self-issued id_tokens
    with random claims (did:jwk and thumbprint subjects, validly signed or not), or a
    valid answer to a fresh request with up to three changes."""
    fresh = data.draw(st.booleans(), label="from a valid answer")
    request = open_wallet_request(client, app) if fresh else pending_wallet_request
    wallet = HeadlessWallet.generate()
    public = {k: v for k, v in wallet.key.export_public(as_dict=True).items() if k != "kid"}
    now = int(time.time())
    thumbprint_sub = JWK_THUMBPRINT_URI + wallet.key.thumbprint() + data.draw(st.sampled_from(["", "é", "\x00"]))
    sub = data.draw(st.sampled_from([wallet.did, thumbprint_sub, "did:jwk:e30", "did:jwk:" + b64("\ud800")]))
    plausible = {"iss": sub, "sub": sub, "aud": request["client_id"], "nonce": request["nonce"], "iat": now}
    plausible.update(exp=now + 120, sub_jwk=public)
    wallet.key["kid"] = wallet.key.thumbprint()
    names = {
        "state": st.just(request["state"]),
        "id_token": jws_shaped(wallet.key, plausible) | st.builds(lambda: wallet.id_token(request)),
        "presentation_submission": st.builds(dumps, JSON),
    }
    if fresh:
        pairs = mutated(data.draw, [("state", request["state"]), ("id_token", wallet.id_token(request))], names)
    else:
        pairs = params_from(data.draw, names)
    response = wsgi.request(
        "POST",
        data.draw(st.sampled_from(["/oauth/wallet/response", "/oauth/wallet/response/"])),
        body=form(pairs),
        content_type=data.draw(CONTENT_TYPES),
    )
    assert_property(response, oauth=True)


@FUZZ
@given(data=st.data())
def test_introspection_revocation_and_device_authorization(data, wsgi, app, flow, alice):
    """Introspection (POST and GET), revocation (both paths) and device authorization
    with random tokens, hints, client_ids and credentials."""
    path = data.draw(
        st.sampled_from(["/oauth/introspect/", "/oauth/revoke_token/", "/oauth/revoke", "/oauth/device-authorization/"])
    )
    names = {
        "token": TEXT,
        "token_type_hint": st.sampled_from(["access_token", "refresh_token", "id_token"]),
        "client_id": st.just(app.client_id),
        "client_secret": st.just(SECRET),
        "scope": st.sampled_from(["openid", "read", "nope"]),
    }
    pairs = params_from(data.draw, names)
    method = "GET" if path == "/oauth/introspect/" and data.draw(st.booleans()) else "POST"
    response = wsgi.request(
        method,
        path,
        query=form(pairs).decode() if method == "GET" else "",
        body=form(pairs) if method == "POST" else b"",
        content_type=data.draw(CONTENT_TYPES),
        headers=data.draw(auth_headers(app)),
    )
    assert_property(response, oauth=True)


@pytest.fixture
def chain_id(flow, alice, planner):
    root_code = flow.authorize(alice, scope="openid read write")[0]
    flow.advance(root_code, planner)
    from chain_grant.core import lifecycle

    return str(lifecycle.find_step(root_code).root_id)


@FUZZ
@given(data=st.data())
def test_review_api(data, wsgi, app, staff_token, chain_id):
    """The review API with a staff token, a random one or none: random filters, ids,
    and bodies (JSON values, random bytes) in random Content-Types."""
    known = st.sampled_from([chain_id, "00000000-0000-0000-0000-000000000000"])
    ident = data.draw(known | TEXT.filter(lambda s: s and "/" not in s))  # others are no API URL
    method, path = data.draw(
        st.sampled_from(
            [
                ("GET", "/api/chains/"),
                ("GET", f"/api/chains/{ident}/"),
                ("GET", f"/api/chains/{ident}/verify/"),
                ("GET", f"/api/chains/{ident}/evidence/"),
                ("POST", f"/api/steps/{ident}/revoke/"),
            ]
        )
    )
    filters = {
        name: st.sampled_from(values)
        for name, values in {
            "application": [app.client_id],
            "agent": ["planner"],
            "user": ["alice"],
            "state": ["live", "ended", "revoked"],
            "created_after": ["2020-01-01T00:00:00Z", "2020-01-01"],
            "created_before": ["2100-01-01T00:00:00+15:00"],
            "limit": ["0", "1", "501", "-1"],
            "offset": ["0", "9999999999999999999"],
        }.items()
    }
    body = data.draw(
        st.builds(lambda v: dumps(v).encode("utf-8", "surrogatepass"), JSON)
        | st.builds(lambda v: dumps({"reason": v}).encode("utf-8", "surrogatepass"), JSON)
        | st.binary(max_size=64)
        | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
    )
    token = data.draw(st.sampled_from([staff_token, None]) | TEXT)
    response = wsgi.request(
        method,
        path,
        query=form(params_from(data.draw, filters)).decode(),
        body=body if method == "POST" or data.draw(st.booleans()) else b"",
        content_type=data.draw(JSON_TYPES | CONTENT_TYPES),
        headers={"Authorization": f"Bearer {token}"} if token is not None else {},
    )
    assert_property(response, oauth=True)


@FUZZ
@given(data=st.data())
def test_csrf_protected_pages(data, wsgi, alice):
    """POSTs to CSRF-protected pages (the admin and account logins, the consent form)
    with a csrftoken cookie, so CsrfViewMiddleware reads the form: random forms in
    random Content-Types, logged in or not. Never a 500."""
    wsgi.cookies = {"csrftoken": data.draw(st.sampled_from(["a" * 32, "b" * 64]) | TEXT.filter(str.isalnum))}
    if data.draw(st.booleans(), label="logged in"):
        browser = Client()
        browser.force_login(alice)
        wsgi.cookies["sessionid"] = browser.cookies["sessionid"].value
    names = {"csrfmiddlewaretoken": st.just("a" * 32), "username": st.just("alice"), "password": TEXT, "allow": TEXT}
    response = wsgi.request(
        "POST",
        data.draw(st.sampled_from(["/admin/login/", "/accounts/login/", "/oauth/authorize/", "/accounts/logout/"])),
        body=form(params_from(data.draw, names)),
        content_type=data.draw(CONTENT_TYPES),
    )
    assert_property(response, oauth=False)
