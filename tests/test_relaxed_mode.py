"""PoC compatibility (RELAXED_PROOFS): a self-asserted `jwk` header becomes a did:jwk
machine account and aud/jti/c_hash become optional. Off by default. Never for a public
client, never for a registered agent's did:jwk, never for a key or account an operator
disabled; any allowed key's did:jwk, however long, is an identifier."""

import json
import time

import pytest
from django.test import Client
from jwcrypto import jwk
from oauth2_provider.models import get_application_model

from chain_grant.client import pkce_pair, sign_proof
from chain_grant.client.jose import did_jwk
from chain_grant.core import agents, lifecycle
from chain_grant.models import Agent, AgentKey, ChainedGrant
from tests.helpers import ISSUER, REDIRECT_URI, Flow, error_of, poc_proof

pytestmark = pytest.mark.django_db


def rs512_proof(key, extra=None):
    """What the PoC's agents send: RS512, the public key in the header, sub = its DID, a message."""
    return poc_proof(key, "RS512", {"message": "hello", **(extra or {})})


@pytest.fixture
def rsa_key():
    return jwk.JWK.generate(kty="RSA", size=2048)


def test_self_asserted_key_is_refused_by_default(flow, alice, rsa_key):
    root_code, _ = flow.authorize(alice)
    response = flow.hop(root_code, rs512_proof(rsa_key))
    assert error_of(response) == (400, "invalid_grant")
    assert not Agent.objects.exists()


def test_relaxed_mode_accepts_poc_proofs_as_did_jwk_accounts(flow, alice, rsa_key, chain_settings, caplog):
    chain_settings(RELAXED_PROOFS=True)
    root_code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(root_code, rs512_proof(rsa_key))
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid read"
    agent = Agent.objects.get()
    assert agent.self_asserted and agent.identifier.startswith("did:jwk:")
    assert agent.applications.filter(pk=flow.app.pk).exists()
    assert "self-asserted" in caplog.text  # the relaxed mode is logged

    # The same key again reuses the account; a jwk that does not match sub is refused.
    code = response.json()["authorization_code"]
    assert flow.hop(code, rs512_proof(rsa_key)).status_code == 200
    other = jwk.JWK.generate(kty="RSA", size=2048)
    forged = rs512_proof(other, {"sub": agent.identifier})
    assert flow.hop(code, forged).json()["error"] == "invalid_grant"
    assert Agent.objects.count() == 1


def test_relaxed_mode_still_checks_times_and_signature(flow, alice, rsa_key, chain_settings):
    chain_settings(RELAXED_PROOFS=True)
    root_code, _ = flow.authorize(alice)
    expired = rs512_proof(rsa_key, {"iat": int(time.time()) - 500, "exp": int(time.time()) - 400})
    assert flow.hop(root_code, expired).json()["error"] == "invalid_grant"
    header, payload, sig = rs512_proof(rsa_key).split(".")
    assert flow.hop(root_code, f"{header}.{payload}.{sig[::-1]}").json()["error"] == "invalid_grant"


def test_relaxed_mode_checks_claims_that_are_present(flow, alice, planner, chain_settings):
    chain_settings(RELAXED_PROOFS=True)
    root_code, _ = flow.authorize(alice)
    assert flow.hop(root_code, planner.proof(root_code, aud="https://elsewhere")).json()["error"] == "invalid_grant"
    assert flow.hop(root_code, planner.proof("another-code")).json()["error"] == "invalid_grant"  # c_hash


# --- self-asserted keys: what relaxed mode never allows -------------------------------------


@pytest.fixture
def relaxed(chain_settings):
    chain_settings(RELAXED_PROOFS=True)


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize(
    ("params", "alg"),
    [
        ({"kty": "RSA", "size": 2048}, "RS512"),
        ({"kty": "RSA", "size": 4096}, "PS256"),
        ({"kty": "EC", "crv": "P-521"}, "ES512"),
    ],
    ids=["RSA-2048", "RSA-4096", "P-521"],
)
def test_relaxed_mode_takes_long_did_jwk_identifiers(params, alg, flow, alice):
    """Rule: a did:jwk of any allowed key (an RSA-4096 one is ~960 characters) is an
    identifier like any other: the hop works on both databases, no 500."""
    key = jwk.JWK.generate(**params)
    code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(code, poc_proof(key, alg))
    assert response.status_code == 200, response.content
    did = did_jwk(key.export_public(as_dict=True))
    agent = Agent.objects.get()
    assert agent.identifier == did and agent.self_asserted
    assert lifecycle.find_step(response.json()["authorization_code"]).subject == did


@pytest.mark.usefixtures("relaxed")
def test_relaxed_mode_refuses_self_asserted_keys_from_public_clients(alice, make_app):
    """Rule: a public client's code plus a freshly made key must not become a token
    without the code's PKCE verifier: self-asserted proofs from public clients are
    invalid_grant, and the rightful holder can still exchange the code."""
    Application = get_application_model()
    public = make_app("public-app", client_type=Application.CLIENT_PUBLIC, client_secret="")
    owner = Flow(Client(), public)
    stolen_code, verifier = owner.authorize(alice, scope="openid read write")
    _, challenge = pkce_pair()
    response = Client().post(
        "/oauth/token",
        {
            "grant_type": "code_chain",
            "client_id": public.client_id,
            "authorization_code": stolen_code,
            "id_token": poc_proof(jwk.JWK.generate(kty="EC", crv="P-256")),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert error_of(response) == (400, "invalid_grant")
    assert not Agent.objects.exists() and not ChainedGrant.objects.exists()

    exchange = Client().post(
        "/oauth/token",
        {
            "grant_type": "authorization_code",
            "client_id": public.client_id,
            "code": stolen_code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert exchange.status_code == 200, exchange.content


@pytest.mark.usefixtures("relaxed")
def test_relaxed_jwk_header_cannot_speak_for_a_registered_agent(flow, alice, app):
    """Rule: a registered agent whose identifier happens to be a did:jwk is not usable
    through the self-asserted path (its registration, keys and policy decide), even
    for a client it is registered for; its registered path still works."""
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    public = key.export_public(as_dict=True)
    agent = agents.register_agent(did_jwk(public), json.dumps(public), [app], "read")
    code, _ = flow.authorize(alice, scope="openid read write")

    response = flow.hop(code, poc_proof(key))
    assert error_of(response) == (400, "invalid_grant")
    agent.refresh_from_db()
    assert not agent.self_asserted and agent.keys.count() == 1
    assert not ChainedGrant.objects.exists()

    registered = flow.hop(code, sign_proof(key, sub=agent.identifier, aud=ISSUER, code=code))
    assert registered.status_code == 200, registered.content
    assert registered.json()["scope"] == "read"  # the registered policy applied


@pytest.mark.usefixtures("relaxed")
def test_relaxed_mode_keeps_a_registered_agents_disabled_key_and_clients(flow, alice, make_app):
    """Rule: relaxed mode does not bring back a disabled key of a registered did:jwk
    agent, nor silently add the calling client to the agent's applications."""
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    public = key.export_public(as_dict=True)
    other_app = make_app("other-app")
    agent = agents.register_agent(did_jwk(public), json.dumps(public), [other_app], "read")
    AgentKey.objects.filter(agent=agent).update(is_active=False)  # key compromised: disabled
    code, _ = flow.authorize(alice, scope="openid read")

    assert error_of(flow.hop(code, poc_proof(key))) == (400, "invalid_grant")
    assert list(agent.applications.all()) == [other_app]
    assert not agent.keys.filter(is_active=True).exists()
    assert not ChainedGrant.objects.exists()


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize("disable", ["key", "agent"])
def test_relaxed_mode_refuses_a_disabled_self_asserted_account(disable, flow, alice):
    """Rule: once an operator disables a self-asserted account's key (or the account),
    proofs with that key are refused; the account is not re-created or re-enabled."""
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    code, _ = flow.authorize(alice, scope="openid read")
    first = flow.hop(code, poc_proof(key))
    assert first.status_code == 200, first.content
    agent = Agent.objects.get()
    agents.disable(agent, kid=agent.keys.get().kid if disable == "key" else None)

    next_code = first.json()["authorization_code"]
    assert error_of(flow.hop(next_code, poc_proof(key))) == (400, "invalid_grant")
    agent.refresh_from_db()
    assert Agent.objects.count() == 1 and agent.keys.count() == 1
    assert (agent.is_active, agent.keys.get().is_active) == ((True, False) if disable == "key" else (False, True))
    assert lifecycle.find_step(next_code).children_count == 0
