"""DPoP (RFC 9449) on the token endpoint and at a resource server: each proof rule is
a negative test; a hop with a proof binds its code to the key, so a stolen code (no
key) cannot be exchanged or continued; tokens come back token_type=DPoP, introspect
with cnf.jkt, and /api/answers/ refuses them without a proof by that key."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from jwcrypto import jwk, jws

from chain_grant.client import generate_key, pkce_pair
from chain_grant.client.keys import dpop_proof
from chain_grant.core import dpop, lifecycle
from chain_grant.models import ChainClient, ChainedGrant, DPoPBinding
from tests.helpers import REDIRECT_URI

pytestmark = pytest.mark.django_db
TOKEN_URL = "http://testserver/oauth/token/"
ANSWERS_URL = "http://testserver/api/answers/"


@pytest.fixture
def key():
    return generate_key("EC")


def hop(flow, code, agent, proof=None, **extra):
    """A code_chain hop from ``code`` (with a DPoP ``proof``); the new code's PKCE verifier
    is ``response.verifier``."""
    headers = {"HTTP_DPOP": proof} if proof else {}
    verifier, challenge = pkce_pair()
    data = {
        "grant_type": "code_chain",
        "authorization_code": code,
        "id_token": agent.proof(code),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    response = flow.client.post("/oauth/token/", data, **flow.auth(), **headers)
    response.verifier = verifier
    return response


def exchange(flow, code, verifier, proof=None):
    headers = {"HTTP_DPOP": proof} if proof else {}
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    return flow.client.post("/oauth/token/", data, **flow.auth(), **headers)


def bound_hop(flow, alice, planner, key):
    """A DPoP-bound hop: (its code, its verifier, the response)."""
    root, _ = flow.authorize(alice, scope="openid read")
    response = hop(flow, root, planner, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    assert response.status_code == 200, response.content
    return response.json()["authorization_code"], response.verifier, response


def test_a_hop_with_a_proof_binds_its_code_to_the_key(flow, alice, planner, key):
    code, _, _ = bound_hop(flow, alice, planner, key)
    assert lifecycle.find_step(code).dpop_jkt == key.thumbprint()


def test_a_stolen_bound_code_cannot_be_exchanged_or_continued_without_the_key(flow, alice, planner, key, make_agent):
    code, verifier, _ = bound_hop(flow, alice, planner, key)
    # The thief has the code (and even its verifier), not the key.
    response = exchange(flow, code, verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof"
    other = dpop_proof(generate_key("EC"), htm="POST", htu=TOKEN_URL)
    response = exchange(flow, code, verifier, other)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    writer = make_agent("writer", scopes="read")
    continued = hop(flow, code, writer).json()  # the binding is known once the parent is read
    assert continued["error"] == "invalid_grant" and "DPoP" in continued["error_description"]
    assert hop(flow, code, writer, dpop_proof(generate_key("EC"), htm="POST", htu=TOKEN_URL)).status_code == 400
    assert ChainedGrant.objects.filter(parent=lifecycle.find_step(code)).count() == 0
    # The holder of the key can do both.
    assert hop(flow, code, writer, dpop_proof(key, htm="POST", htu=TOKEN_URL)).status_code == 200
    token = exchange(flow, code, verifier, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    assert token.status_code == 200, token.content
    assert token.json()["token_type"] == "DPoP"


def test_a_bound_token_introspects_with_cnf_jkt(flow, alice, planner, key):
    code, verifier, _ = bound_hop(flow, alice, planner, key)
    token = exchange(flow, code, verifier, dpop_proof(key, htm="POST", htu=TOKEN_URL)).json()["access_token"]
    seen = flow.introspect(token)
    assert seen["cnf"] == {"jkt": key.thumbprint()} and seen["token_type"] == "DPoP"
    event = lifecycle.find_step(code).events.get(kind="exchanged")
    assert event.data["dpop_jkt"] == key.thumbprint()  # signed with the exchange


def test_a_plain_dot_code_exchanged_with_a_proof_gets_a_bound_token(flow, alice, key):
    code, verifier = flow.authorize(alice, scope="openid read")
    response = exchange(flow, code, verifier, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    assert response.status_code == 200 and response.json()["token_type"] == "DPoP"
    assert DPoPBinding.objects.filter(kind="access", jkt=key.thumbprint()).count() == 1


def test_a_client_that_requires_dpop_refuses_hops_and_exchanges_without_it(flow, alice, planner, app, key):
    ChainClient.objects.filter(application=app).update(dpop_required=True)
    root, verifier = flow.authorize(alice, scope="openid read")
    assert hop(flow, root, planner).json()["error"] == "invalid_dpop_proof"
    assert exchange(flow, root, verifier).json()["error"] == "invalid_dpop_proof"
    assert exchange(flow, root, verifier, dpop_proof(key, htm="POST", htu=TOKEN_URL)).status_code == 200


def test_a_public_clients_refresh_token_is_bound(make_app, alice, key, make_agent):
    from oauth2_provider.models import get_application_model

    from chain_grant.client import pkce_pair as pair
    from tests.helpers import Flow

    public = make_app("public-app", client_type=get_application_model().CLIENT_PUBLIC, client_secret="")
    owner = Flow(Client(), public)
    code, verifier = owner.authorize(alice, scope="openid read")
    data = {
        "grant_type": "authorization_code",
        "client_id": public.client_id,
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    tokens = Client().post("/oauth/token/", data, HTTP_DPOP=dpop_proof(key, htm="POST", htu=TOKEN_URL)).json()
    refresh = {"grant_type": "refresh_token", "client_id": public.client_id, "refresh_token": tokens["refresh_token"]}
    assert Client().post("/oauth/token/", refresh).json()["error"] == "invalid_dpop_proof"
    stolen = Client().post(
        "/oauth/token/", refresh, HTTP_DPOP=dpop_proof(generate_key("EC"), htm="POST", htu=TOKEN_URL)
    )
    assert stolen.json()["error"] == "invalid_grant"
    again = Client().post("/oauth/token/", refresh, HTTP_DPOP=dpop_proof(key, htm="POST", htu=TOKEN_URL))
    assert again.status_code == 200 and again.json()["token_type"] == "DPoP"
    assert pair  # the helper is the SDK's


# --- each proof rule ------------------------------------------------------------------------


def signed(key, header, claims):
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=header.get("alg", "ES256"), protected=json.dumps(header))
    return token.serialize(compact=True)


def base(key, **claims):
    return {
        "header": {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.export_public(as_dict=True)},
        "claims": {"jti": str(time.time_ns()), "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time()), **claims},
    }


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p, k: p["header"].update(typ="JWT"), "typ"),
        (lambda p, k: p["header"].pop("jwk"), "jwk"),
        (lambda p, k: p["header"].update(jwk=k.export(as_dict=True, private_key=True)), "jwk"),
        (lambda p, k: p["claims"].update(htm="GET"), "htm"),
        (lambda p, k: p["claims"].update(htu="http://testserver/oauth/introspect/"), "htu"),
        (lambda p, k: p["claims"].update(htu="http://[testserver/oauth/token/"), "htu"),  # urlsplit: ValueError
        (lambda p, k: p["claims"].update(htu="http://testserver:99999/oauth/token/"), "htu"),  # .port: ValueError
        (lambda p, k: p["claims"].update(iat=int(time.time()) - 3600), "iat"),
        (lambda p, k: p["claims"].update(iat=int(time.time()) + 3600), "iat"),
        (lambda p, k: p["claims"].pop("jti"), "jti"),
        (lambda p, k: p["header"].update(jwk=generate_key("EC").export_public(as_dict=True)), "signature"),
    ],
    ids=[
        "typ",
        "no-jwk",
        "private-jwk",
        "htm",
        "htu",
        "htu-bad-ipv6",
        "htu-bad-port",
        "iat-old",
        "iat-future",
        "no-jti",
        "other-key",
    ],
)
def test_each_proof_rule(flow, alice, planner, key, edit, expected):
    proof = base(key)
    edit(proof, key)
    root, _ = flow.authorize(alice, scope="openid read")
    response = hop(flow, root, planner, signed(key, proof["header"], proof["claims"]))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_dpop_proof"
    assert expected in response.json()["error_description"]
    assert not ChainedGrant.objects.filter(kind="agent").exists()


def test_hs256_and_none_proofs_are_refused(flow, alice, planner, key):
    secret = jwk.JWK(kty="oct", k=jws.base64url_encode(b"k" * 32))
    proof = base(key)
    hs = signed(secret, {**proof["header"], "alg": "HS256"}, proof["claims"])
    none = (
        jws.base64url_encode(json.dumps({**proof["header"], "alg": "none"}))
        + "."
        + jws.base64url_encode(json.dumps(proof["claims"]))
        + "."
    )
    for bad in (
        hs,
        none,
        "not-a-jws",
        f"{dpop_proof(key, htm='POST', htu=TOKEN_URL)},{dpop_proof(key, htm='POST', htu=TOKEN_URL)}",
    ):
        root, _ = flow.authorize(alice, scope="openid read")
        response = hop(flow, root, planner, bad)
        assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof", response.content


def test_a_replayed_proof_is_refused(flow, alice, planner, key):
    proof = dpop_proof(key, htm="POST", htu=TOKEN_URL)
    root, _ = flow.authorize(alice, scope="openid read")
    assert hop(flow, root, planner, proof).status_code == 200
    root, _ = flow.authorize(alice, scope="openid read")
    response = hop(flow, root, planner, proof)
    assert response.json()["error"] == "invalid_dpop_proof" and "jti" in response.json()["error_description"]


def test_a_server_nonce_is_required_when_configured(flow, alice, planner, key, chain_settings):
    chain_settings(DPOP_NONCE_SECONDS=300)
    root, _ = flow.authorize(alice, scope="openid read")
    response = hop(flow, root, planner, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    assert response.status_code == 400 and response.json()["error"] == "use_dpop_nonce"
    nonce = response["DPoP-Nonce"]
    assert nonce == dpop.nonces()[0]
    assert hop(flow, root, planner, dpop_proof(key, htm="POST", htu=TOKEN_URL, nonce="stale")).json()["error"] == (
        "use_dpop_nonce"
    )
    assert hop(flow, root, planner, dpop_proof(key, htm="POST", htu=TOKEN_URL, nonce=nonce)).status_code == 200


def test_discovery_lists_dpop_algorithms(client):
    data = client.get("/oauth/.well-known/openid-configuration").json()
    assert "ES256" in data["dpop_signing_alg_values_supported"]
    assert not {"none", "HS256"} & set(data["dpop_signing_alg_values_supported"])


# --- the resource server: /api/answers/ -------------------------------------------------------


@pytest.fixture
def bound_token(flow, alice, make_agent, key):
    writer = make_agent("writer", scopes="openid email")
    root, _ = flow.authorize(alice, scope="openid email")
    bound = hop(flow, root, writer, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    code = bound.json()["authorization_code"]
    response = exchange(flow, code, bound.verifier, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    return response.json()["access_token"]


def post_answer(token, scheme="DPoP", proof=None):
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"}
    if proof:
        headers["HTTP_DPOP"] = proof
    return Client().post(ANSWERS_URL, json.dumps({"text": "hello"}), content_type="application/json", **headers)


def test_answers_accept_a_bound_token_with_its_proof(bound_token, key):
    response = post_answer(bound_token, proof=dpop_proof(key, htm="POST", htu=ANSWERS_URL, access_token=bound_token))
    assert response.status_code == 201, response.content


def test_a_stolen_bound_token_is_refused_by_answers(bound_token, key):
    assert post_answer(bound_token, scheme="Bearer").status_code == 401  # as a bearer token
    assert post_answer(bound_token).status_code == 401  # no proof
    thief = generate_key("EC")
    assert (
        post_answer(
            bound_token, proof=dpop_proof(thief, htm="POST", htu=ANSWERS_URL, access_token=bound_token)
        ).status_code
        == 401
    )
    wrong_ath = dpop_proof(key, htm="POST", htu=ANSWERS_URL, access_token="another-token")
    assert post_answer(bound_token, proof=wrong_ath).status_code == 401
    wrong_htu = dpop_proof(key, htm="POST", htu="http://testserver/api/other/", access_token=bound_token)
    assert post_answer(bound_token, proof=wrong_htu).status_code == 401
    for unparsable in ("http://[testserver/api/answers/", "http://testserver:99999/api/answers/"):  # no 500
        proof = dpop_proof(key, htm="POST", htu=unparsable, access_token=bound_token)
        assert post_answer(bound_token, proof=proof).status_code == 401
    refused = post_answer(bound_token, scheme="Bearer")
    assert "DPoP" in refused["WWW-Authenticate"]


# --- dpop_jkt at authorize (RFC 9449 §10) ----------------------------------------------------


def authorize_with_jkt(flow, alice, jkt, **extra):
    from urllib.parse import parse_qs, urlencode, urlparse

    from tests.helpers import authorize_params

    params, verifier = authorize_params(flow.app, scope="openid read", dpop_jkt=jkt, **extra)
    flow.client.force_login(alice)
    url = "/oauth/authorize/?" + urlencode(params)
    response = flow.client.post(url, {**params, "allow": "Authorize"})
    flow.client.logout()
    return response, parse_qs(urlparse(response["Location"]).query), verifier


def test_dpop_jkt_at_authorize_binds_the_dot_code(flow, alice, key):
    response, query, verifier = authorize_with_jkt(flow, alice, key.thumbprint())
    code = query["code"][0]
    assert exchange(flow, code, verifier).json()["error"] == "invalid_dpop_proof"
    other = exchange(flow, code, verifier, dpop_proof(generate_key("EC"), htm="POST", htu=TOKEN_URL))
    assert other.json()["error"] == "invalid_grant"
    ok = exchange(flow, code, verifier, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    assert ok.status_code == 200 and ok.json()["token_type"] == "DPoP"


def test_a_malformed_dpop_jkt_is_refused(flow, alice):
    response, query, _ = authorize_with_jkt(flow, alice, "not-a-thumbprint")
    assert query["error"] == ["invalid_request"] and "code" not in query


def test_dpop_jkt_on_a_consent_step_binds_the_user_step(flow, alice, planner, key):
    from tests.helpers import consent_form, consent_url

    root, _ = flow.authorize(alice, scope="openid read email")
    code, _, _ = flow.advance(root, planner)
    url, verifier = consent_url(flow.app, code, scope="email", dpop_jkt=key.thumbprint())
    flow.client.force_login(alice)
    response = flow.client.post(url, consent_form(url))
    from urllib.parse import parse_qs, urlparse

    new_code = parse_qs(urlparse(response["Location"]).query)["code"][0]
    step = lifecycle.find_step(new_code)
    assert step.kind == "user" and step.dpop_jkt == key.thumbprint()
    assert exchange(flow, new_code, verifier).json()["error"] == "invalid_dpop_proof"
    assert exchange(flow, new_code, verifier, dpop_proof(key, htm="POST", htu=TOKEN_URL)).status_code == 200


def test_a_consent_step_on_a_bound_code_must_keep_the_binding(flow, alice, planner, key):
    from urllib.parse import parse_qs, urlparse

    from tests.helpers import consent_form, consent_url

    code, _, _ = bound_hop(flow, alice, planner, key)
    flow.client.force_login(alice)
    for jkt in (None, generate_key("EC").thumbprint()):
        extra = {"dpop_jkt": jkt} if jkt else {}
        url, _ = consent_url(flow.app, code, scope="email", **extra)
        response = flow.client.post(url, consent_form(url))
        query = parse_qs(urlparse(response["Location"]).query)
        assert query["error"] == ["invalid_request"] and "DPoP" in query["error_description"][0]
    url, _ = consent_url(flow.app, code, scope="email", dpop_jkt=key.thumbprint())
    response = flow.client.post(url, consent_form(url))
    assert "code" in parse_qs(urlparse(response["Location"]).query)


# --- found in review ----------------------------------------------------------------------


def test_a_code_bound_at_authorize_stays_bound_when_it_starts_a_chain(flow, alice, planner, key):
    _, query, verifier = authorize_with_jkt(flow, alice, key.thumbprint())
    code = query["code"][0]
    assert hop(flow, code, planner).status_code == 400  # continuing it needs the key too
    assert hop(flow, code, planner, dpop_proof(key, htm="POST", htu=TOKEN_URL)).status_code == 200
    assert lifecycle.find_step(code).dpop_jkt == key.thumbprint()  # the root recorded the binding
    assert exchange(flow, code, verifier).json()["error"] == "invalid_dpop_proof"


def test_a_bound_token_is_not_a_bearer_token_anywhere(bound_token):
    for url in ("/oauth/userinfo/", "/api/chains/"):
        response = Client().get(url, HTTP_AUTHORIZATION=f"Bearer {bound_token}")
        assert response.status_code in (401, 403), (url, response.status_code)
        assert response.status_code != 200


def test_a_proof_with_an_empty_jwk_is_invalid_not_a_500(flow, alice, key):
    from chain_grant.client.jose import b64url

    def enc(value):
        return b64url(json.dumps(value).encode())

    claims = {"jti": "x", "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time())}
    proof = f"{enc({'typ': 'dpop+jwt', 'alg': 'ES256', 'jwk': {}})}.{enc(claims)}.AAAA"
    code, verifier = flow.authorize(alice, scope="openid read")
    response = exchange(flow, code, verifier, proof)
    assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof"


def test_dpop_jkt_on_the_wallet_step_is_refused_not_ignored(wflow, key):
    response = wflow.client.get(
        "/oauth/authorize/",
        {
            "client_id": wflow.app.client_id,
            "response_type": "id_token",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "state": "s",
            "nonce": "n",
            "code_challenge": pkce_pair()[1],
            "code_challenge_method": "S256",
            "dpop_jkt": key.thumbprint(),
        },
    )
    assert response.status_code in (302, 400)
    assert "dpop_jkt" in (response.get("Location", "") + response.content.decode())


def test_a_refused_dpop_request_gets_a_dpop_challenge(bound_token, key):
    thief = generate_key("EC")
    response = post_answer(bound_token, proof=dpop_proof(thief, htm="POST", htu=ANSWERS_URL, access_token=bound_token))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')


def test_resource_servers_require_no_nonce(bound_token, key, chain_settings):
    chain_settings(DPOP_NONCE_SECONDS=300)  # the token endpoint's
    response = post_answer(bound_token, proof=dpop_proof(key, htm="POST", htu=ANSWERS_URL, access_token=bound_token))
    assert response.status_code == 201, response.content
