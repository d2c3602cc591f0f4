"""Odd input never crashes the IdP. Every malformed request to /oauth/token (and
/oauth/introspect) is an OAuth error JSON with a 4xx status, never a 500, and
writes nothing, on SQLite and on PostgreSQL (where a NUL byte, a float or a lone
UTF-16 surrogate would be a database or encoding error if it got that far).

Should something crash anyway, the error report (DEBUG page, mail_admins, Sentry)
does not carry the codes, proofs, verifiers or secrets that were posted."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.test import Client
from django.views.debug import SafeExceptionReporterFilter
from jwcrypto import jwk
from oauth2_provider.models import get_grant_model

from chain_grant.client import pkce_pair
from chain_grant.core import lifecycle
from chain_grant.core.codes import code_digest
from chain_grant.models import ChainedGrant
from chain_grant.oauth.views import SECRET_PARAMS
from chain_grant.settings import chain_grant_settings
from chain_grant.validators import ChainOAuth2Validator
from tests.helpers import (
    FORM,
    ISSUER,
    REDIRECT_URI,
    SECRET,
    assert_error,
    b64,
    basic_auth,
    crash_report,
    proof_claims,
    sign_jws,
    signed,
)

pytestmark = pytest.mark.django_db
Grant = get_grant_model()


# --- building odd proofs ------------------------------------------------------------


def with_raw_claim(agent, code, raw_json: str) -> str:
    """A signed proof whose claims are valid except for one extra claim ``x`` given as raw JSON."""
    return sign_jws(agent.key, json.dumps(proof_claims(agent, code))[:-1] + f', "x": {raw_json}}}')


def unsigned(payload, header=None) -> str:
    return f"{b64(header or {'alg': 'ES256'})}.{b64(payload)}.AAAA"


def post_form(flow, body: bytes | str, **extra):
    return flow.client.post("/oauth/token", body, content_type=FORM, **{**flow.auth(), **extra})


# --- the cases -----------------------------------------------------------------------

INVALID_REQUEST = (400, {"invalid_request"})
INVALID_GRANT = (400, {"invalid_grant"})
INVALID_SCOPE = (400, {"invalid_scope"})
INVALID_CLIENT = (401, {"invalid_client"})

# name: (request(flow, planner, code) -> response, (status, accepted error codes))
CASES = {
    # NUL bytes: PostgreSQL refuses them in text and jsonb.
    "sub NUL (unsigned)": (lambda f, p, c: f.hop(c, unsigned({"sub": "a\u0000b"})), INVALID_REQUEST),
    "kid NUL (unsigned)": (
        lambda f, p, c: f.hop(c, unsigned({"sub": "planner"}, {"alg": "ES256", "kid": "a\u0000"})),
        INVALID_REQUEST,
    ),
    "jti NUL (signed)": (lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, jti="x\u0000"))), INVALID_REQUEST),
    "msg_sha256 NUL (signed)": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, msg_sha256="x\u0000"))),
        INVALID_REQUEST,
    ),
    "extra claim NUL (signed)": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, note="x\u0000"))),
        INVALID_REQUEST,
    ),
    "scope NUL": (lambda f, p, c: f.hop(c, p.proof(c), scope="read\x00"), INVALID_SCOPE),
    "authorization_code NUL": (lambda f, p, c: f.hop("a\x00", p.proof("a\x00")), INVALID_GRANT),
    "authorization_code non-ASCII": (lambda f, p, c: f.hop("é" * 40, p.proof("é" * 40)), INVALID_GRANT),
    "authorization_code too long": (lambda f, p, c: f.hop("c" * 300, p.proof("c" * 300)), INVALID_GRANT),
    "client_id NUL (form)": (
        lambda f, p, c: f.client.post(
            "/oauth/token",
            {
                "grant_type": "code_chain",
                "client_id": "a\x00",
                "client_secret": "x",
                "authorization_code": c,
                "id_token": "a.b.c",
            },
        ),
        INVALID_CLIENT,
    ),
    "client_id NUL (Basic auth)": (
        lambda f, p, c: f.client.post(
            "/oauth/token",
            {"grant_type": "code_chain", "authorization_code": c, "id_token": p.proof(c)},
            HTTP_AUTHORIZATION=basic_auth("a\x00", "x"),
        ),
        INVALID_CLIENT,
    ),
    "client_secret NUL": (
        lambda f, p, c: f.client.post(
            "/oauth/token",
            {"grant_type": "code_chain", "authorization_code": c, "id_token": p.proof(c)},
            HTTP_AUTHORIZATION=basic_auth(f.app.client_id, "s\x00"),
        ),
        INVALID_CLIENT,
    ),
    "exchange code NUL": (
        lambda f, p, c: f.client.post(
            "/oauth/token",
            {
                "grant_type": "authorization_code",
                "code": "a\x00",
                "redirect_uri": REDIRECT_URI,
                "code_verifier": "y" * 43,
            },
            **f.auth(),
        ),
        INVALID_GRANT,
    ),
    "exchange redirect_uri NUL": (
        lambda f, p, c: f.client.post(
            "/oauth/token",
            {"grant_type": "authorization_code", "code": c, "redirect_uri": "x\x00", "code_verifier": "y" * 43},
            **f.auth(),
        ),
        INVALID_GRANT,
    ),
    "refresh_token NUL": (lambda f, p, c: f.refresh("a\x00"), INVALID_GRANT),
    # Floats, NaN and Infinity: jsonb would rewrite them (and break the link_hash).
    "extra claim NaN (signed)": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, note=float("nan")))),
        INVALID_REQUEST,
    ),
    "extra claim Infinity (signed)": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, note=float("inf")))),
        INVALID_REQUEST,
    ),
    "extra claim -Infinity (signed)": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, note=float("-inf")))),
        INVALID_REQUEST,
    ),
    "exp float (signed)": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, exp=time.time() + 30))),
        INVALID_REQUEST,
    ),
    "exponent literal 1e5 (signed)": (lambda f, p, c: f.hop(c, with_raw_claim(p, c, "1e5")), INVALID_REQUEST),
    # Odd code_challenge values (RFC 7636: 43-128 unreserved characters).
    "code_challenge NUL": (
        lambda f, p, c: f.hop(c, p.proof(c), code_challenge="a" * 42 + "\x00", code_challenge_method="S256"),
        INVALID_REQUEST,
    ),
    "code_challenge non-ASCII": (
        lambda f, p, c: f.hop(c, p.proof(c), code_challenge="é" * 60, code_challenge_method="S256"),
        INVALID_REQUEST,
    ),
    "code_challenge base64 (+/=)": (
        lambda f, p, c: f.hop(c, p.proof(c), code_challenge="a+b/" * 11 + "=", code_challenge_method="S256"),
        INVALID_REQUEST,
    ),
    "code_challenge too short": (
        lambda f, p, c: f.hop(c, p.proof(c), code_challenge="a" * 42, code_challenge_method="S256"),
        INVALID_REQUEST,
    ),
    "code_challenge too long": (
        lambda f, p, c: f.hop(c, p.proof(c), code_challenge="a" * 129, code_challenge_method="S256"),
        INVALID_REQUEST,
    ),
    "code_challenge_method unknown": (
        lambda f, p, c: f.hop(c, p.proof(c), code_challenge="a" * 43, code_challenge_method="S512"),
        INVALID_REQUEST,
    ),
    "repeated code_challenge": (
        lambda f, p, c: post_form(
            f,
            f"grant_type=code_chain&authorization_code={c}&id_token={p.proof(c)}&code_challenge={'a' * 43}"
            f"&code_challenge={'b' * 43}&code_challenge_method=S256",
        ),
        INVALID_REQUEST,
    ),
    # Wrong JSON types and sizes in the proof.
    "aud nested list": (lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, aud=[[ISSUER]]))), INVALID_GRANT),
    "sub list": (lambda f, p, c: f.hop(c, unsigned({"sub": ["planner"]})), INVALID_GRANT),
    "sub very long": (lambda f, p, c: f.hop(c, unsigned({"sub": "p" * 6000})), INVALID_GRANT),
    "kid object": (lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c), {"kid": {"a": 1}})), INVALID_GRANT),
    "kid number": (lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c), {"kid": 5})), INVALID_GRANT),
    "alg list": (
        lambda f, p, c: f.hop(c, unsigned({"sub": "planner"}, {"alg": ["ES256"], "kid": p.key["kid"]})),
        INVALID_GRANT,
    ),
    "alg none, empty signature": (
        lambda f, p, c: f.hop(c, unsigned(proof_claims(p, c), {"alg": "none"})[:-4]),
        INVALID_GRANT,
    ),
    "b64 false": (
        lambda f, p, c: f.hop(c, unsigned({"sub": "planner"}, {"alg": "ES256", "b64": False, "kid": p.key["kid"]})),
        INVALID_GRANT,
    ),
    "crit header": (
        lambda f, p, c: f.hop(c, unsigned(proof_claims(p, c), {"alg": "ES256", "crit": ["exp"]})),
        INVALID_GRANT,
    ),
    "exp and iat huge": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, iat=10**300, exp=10**300))),
        INVALID_GRANT,
    ),
    "iat hugely negative": (lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, iat=-(10**300)))), INVALID_GRANT),
    "integer too long to parse": (lambda f, p, c: f.hop(c, with_raw_claim(p, c, "1" + "0" * 5000)), INVALID_REQUEST),
    "nesting beyond the parser's limit": (
        lambda f, p, c: f.hop(c, with_raw_claim(p, c, "[" * 2000 + "]" * 2000)),
        INVALID_REQUEST,
    ),
    "proof over PROOF_MAX_BYTES": (
        lambda f, p, c: f.hop(c, "a" * (chain_grant_settings.PROOF_MAX_BYTES + 1)),
        INVALID_REQUEST,
    ),
    "proof in JSON serialization": (
        lambda f, p, c: f.hop(c, json.dumps({"payload": "e30", "signature": "AA"})),
        INVALID_REQUEST,
    ),
    "proof with four segments": (lambda f, p, c: f.hop(c, p.proof(c) + ".AAAA"), INVALID_REQUEST),
    # Bodies that are not UTF-8 (Django decodes them with replacement characters).
    "non-UTF-8 body, percent-encoded": (
        lambda f, p, c: post_form(f, b"grant_type=code_chain&authorization_code=%ff%fe&id_token=\xff\xfe"),
        (400, {"invalid_request", "invalid_grant"}),
    ),
    "non-UTF-8 body, raw bytes": (
        lambda f, p, c: post_form(f, b"grant_type=code_chain&authorization_code=\xff&id_token=a.b.c"),
        (400, {"invalid_request", "invalid_grant"}),
    ),
    # oauthlib answers a body client_id that differs from the authenticated one with
    # "server_error" (its wording) but status 400: still an OAuth error, not a crash.
    "client_id differs from Basic auth": (
        lambda f, p, c: f.client.post(
            "/oauth/token",
            {"grant_type": "code_chain", "client_id": "someone-else", "authorization_code": c, "id_token": p.proof(c)},
            **f.auth(),
        ),
        (400, {"invalid_client", "invalid_request", "server_error"}),
    ),
}

# Lone UTF-16 surrogates ("\ud800") and deep nesting pass json.loads but are not
# storable (UTF-8, the database adapters and json.dumps would raise): refused up front.
LONE_SURROGATE_SUB = '{"sub": "\\ud800"}'  # JSON text: the escape, not the character
UNSTORABLE_CASES = {
    "sub lone surrogate (unsigned)": (lambda f, p, c: f.hop(c, unsigned(LONE_SURROGATE_SUB)), INVALID_REQUEST),
    "sub lone surrogate (signed)": (
        lambda f, p, c: f.hop(
            c, sign_jws(p.key, json.dumps(proof_claims(p, c)).replace('"planner"', '"planner\\ud800"'))
        ),
        INVALID_REQUEST,
    ),
    "jti lone surrogate (signed)": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, jti="j\ud800"))),
        INVALID_REQUEST,
    ),
    "msg_sha256 lone surrogate (signed)": (
        lambda f, p, c: f.hop(c, signed(p, proof_claims(p, c, msg_sha256="\udfff"))),
        INVALID_REQUEST,
    ),
    "extra claim lone surrogate (signed)": (
        lambda f, p, c: f.hop(c, with_raw_claim(p, c, '"\\udfff\\ud800"')),
        INVALID_REQUEST,
    ),
}
DEEP_NESTING_CASE = (lambda f, p, c: f.hop(c, with_raw_claim(p, c, "[" * 900 + "]" * 900)), INVALID_REQUEST)

ALL_CASES = [
    *(pytest.param(name, *CASES[name], id=name) for name in CASES),
    *(pytest.param(name, *UNSTORABLE_CASES[name], id=name) for name in UNSTORABLE_CASES),
    pytest.param("nesting 900 deep", *DEEP_NESTING_CASE, id="nesting 900 deep"),
]


@pytest.fixture
def code(flow, alice, planner):
    """A fresh, never chained DOT code: any step written by a refused request would show."""
    code, _ = flow.authorize(alice, scope="openid read write")
    return code


@pytest.mark.parametrize(("name", "send", "expected"), ALL_CASES)
def test_odd_token_request_is_an_oauth_error_not_a_500(name, send, expected, flow, planner, code):
    """Rule: malformed input to the token endpoint is answered with the right 4xx OAuth
    error JSON, and a refused request writes nothing (no step, no extra DOT grant)."""
    response = send(flow, planner, code)
    assert_error(response, *expected)
    assert not ChainedGrant.objects.exists()
    assert list(Grant.objects.values_list("code", flat=True)) == [code_digest(code)]


def test_repeated_scope_values_are_narrowed_not_a_crash(flow, planner, code):
    """Rule: a huge scope parameter (one value repeated 100 000 times) is no crash: the
    code carries the scope once."""
    response = flow.hop(code, planner.proof(code), scope="read " * 100_000)
    assert response.status_code == 200, response.content[:300]
    assert response.json()["scope"] == "read"
    assert lifecycle.find_step(response.json()["authorization_code"]).scope == "read"


def test_strict_mode_never_trusts_a_jwk_header(flow, planner, code):
    """Rule: without RELAXED_PROOFS a proof's ``jwk`` header is ignored. A key the agent
    does not have, named in the header, does not verify; the registered key still does,
    whatever (symmetric) key the header claims."""
    attacker = jwk.JWK.generate(kty="EC", crv="P-256")
    header = {"kid": planner.key["kid"], "jwk": attacker.export_public(as_dict=True)}
    forged = sign_jws(attacker, json.dumps(proof_claims(planner, code)), {"alg": "ES256", **header})
    assert_error(flow.hop(code, forged), *INVALID_GRANT)
    assert not ChainedGrant.objects.exists()

    genuine = signed(planner, proof_claims(planner, code), {"jwk": {"kty": "oct", "k": "AAAA"}})
    response = flow.hop(code, genuine)
    assert response.status_code == 200, response.content
    assert lifecycle.find_step(response.json()["authorization_code"]).agent_id == planner.model.pk


# --- introspection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"token": "a\x00"},
        {"token": ""},
        {"token": "x" * 100_000},
        {"token": "é" * 50},
        {"token": "a\x00", "token_type_hint": "refresh_token"},
    ],
    ids=["NUL", "empty", "100k chars", "non-ASCII", "NUL with hint"],
)
def test_odd_token_to_introspect_is_inactive(flow, data):
    """Rule: introspecting a token that cannot exist is ``{"active": false}`` (RFC 7662
    §2.2), never a 500."""
    response = flow.client.post("/oauth/introspect/", data, **flow.auth())
    assert response.status_code == 200, response.content[:300]
    assert response.json() == {"active": False}


def test_odd_introspection_requests(flow, client):
    """Rule: a missing token, a non-UTF-8 body, a GET with a NUL byte or bad client
    credentials at the introspection endpoint are 4xx answers, never 500s."""
    missing = flow.client.post("/oauth/introspect/", {}, **flow.auth())
    assert_error(missing, *INVALID_REQUEST)
    non_utf8 = flow.client.post("/oauth/introspect/", b"token=%ff%fe", content_type=FORM, **flow.auth())
    assert (non_utf8.status_code, non_utf8.json()) == (200, {"active": False})
    get_nul = flow.client.get("/oauth/introspect/?token=%00", **flow.auth())
    assert (get_nul.status_code, get_nul.json()) == (200, {"active": False})
    for auth in (basic_auth("a\x00", "x"), basic_auth(flow.app.client_id, "s\x00"), "Bearer a\x00"):
        assert client.post("/oauth/introspect/", {"token": "x"}, HTTP_AUTHORIZATION=auth).status_code == 401


def test_admin_search_with_a_non_uuid_is_no_crash(admin_client):
    """Rule: the chained-grant admin's search (UUID fields among them) takes any text;
    a NUL (which PostgreSQL refuses) is a 400, never a 500."""
    assert admin_client.get("/admin/chain_grant/chainedgrant/", {"q": "not-a-uuid é"}).status_code == 200
    assert admin_client.get("/admin/chain_grant/chainedgrant/", {"q": "not-a-uuid\x00é"}).status_code == 400


# --- error reports never carry codes, proofs or secrets ---------------------------------

# DOT's TokenView marks only password and client_secret, on an inner method that
# overwrites any outer marking; chain_grant's TokenView re-marks SECRET_PARAMS.


def token_requests(flow, alice, planner):
    """One request per grant type, each posting every secret parameter it has."""
    code, verifier = flow.authorize(alice, scope="openid read")
    _, challenge = pkce_pair()
    auth_in_body = {"client_id": flow.app.client_id, "client_secret": SECRET}
    return {
        "code_chain": {
            "grant_type": "code_chain",
            "authorization_code": code,
            "id_token": planner.proof(code),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **auth_in_body,
        },
        "authorization_code": {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": REDIRECT_URI,
            **auth_in_body,
        },
        "refresh_token": {"grant_type": "refresh_token", "refresh_token": "r" * 30, **auth_in_body},
    }


@pytest.mark.parametrize("grant_type", ["code_chain", "authorization_code", "refresh_token"])
def test_token_endpoint_marks_secret_params_sensitive(grant_type, flow, alice, planner):
    """Rule: every parameter of chain_grant.urls.SECRET_PARAMS posted to the token
    endpoint is cleansed by Django's SafeExceptionReporterFilter (what DEBUG pages,
    mail_admins and Sentry's Django integration use)."""
    data = token_requests(flow, alice, planner)[grant_type]
    response = flow.client.post("/oauth/token", data)
    assert response.status_code < 500
    cleansed = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    posted = [name for name in SECRET_PARAMS if name in data]
    hidden = SafeExceptionReporterFilter.cleansed_substitute
    assert posted and {name: cleansed[name] for name in posted} == dict.fromkeys(posted, hidden)
    assert cleansed["grant_type"] == grant_type  # only the secrets are hidden


def test_crash_report_does_not_carry_the_code_or_the_proof(flow, alice, planner, monkeypatch, caplog):
    """Rule: if the token endpoint ever crashes, the logged report's request data has
    the code, the proof and the client secret cleansed."""
    data = token_requests(flow, alice, planner)["code_chain"]

    def crash(self, request):
        raise RuntimeError("simulated crash inside the token endpoint")

    monkeypatch.setattr(ChainOAuth2Validator, "advance_chain", crash)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = Client(raise_request_exception=False).post("/oauth/token", data)
    assert response.status_code == 500
    report = crash_report(caplog)
    assert "simulated crash" in report
    for secret in (data["authorization_code"], data["id_token"], SECRET):
        assert secret not in report
