"""PoC compatibility (RELAXED_PROOFS): a self-asserted `jwk` header becomes a did:jwk
machine account and aud/jti/c_hash become optional. Off by default."""

import json
import time

import pytest
from jwcrypto import jwk, jws

from chain_grant.client.jose import did_jwk
from chain_grant.models import Agent

pytestmark = pytest.mark.django_db


def poc_proof(key, extra_claims=None):
    """What the PoC's agents send: RS512, the public key in the header, sub = its DID."""
    public = key.export_public(as_dict=True)
    now = int(time.time())
    claims = {"sub": did_jwk(public), "iat": now, "exp": now + 60, "message": "hello", **(extra_claims or {})}
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg="RS512", protected=json.dumps({"alg": "RS512", "jwk": public}))
    return token.serialize(compact=True)


@pytest.fixture
def rsa_key():
    return jwk.JWK.generate(kty="RSA", size=2048)


def test_self_asserted_key_is_refused_by_default(flow, alice, rsa_key):
    root_code, _ = flow.authorize(alice)
    response = flow.hop(root_code, poc_proof(rsa_key))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    assert not Agent.objects.exists()


def test_relaxed_mode_accepts_poc_proofs_as_did_jwk_accounts(flow, alice, rsa_key, settings, caplog):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "RELAXED_PROOFS": True}
    root_code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(root_code, poc_proof(rsa_key))
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid read"
    agent = Agent.objects.get()
    assert agent.self_asserted and agent.identifier.startswith("did:jwk:")
    assert agent.applications.filter(pk=flow.app.pk).exists()
    assert "self-asserted" in caplog.text  # the relaxed mode is logged

    # The same key again reuses the account; a jwk that does not match sub is refused.
    code = response.json()["authorization_code"]
    assert flow.hop(code, poc_proof(rsa_key)).status_code == 200
    other = jwk.JWK.generate(kty="RSA", size=2048)
    forged = poc_proof(other, {"sub": agent.identifier})
    assert flow.hop(code, forged).json()["error"] == "invalid_grant"
    assert Agent.objects.count() == 1


def test_relaxed_mode_still_checks_times_and_signature(flow, alice, rsa_key, settings):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "RELAXED_PROOFS": True}
    root_code, _ = flow.authorize(alice)
    expired = poc_proof(rsa_key, {"iat": int(time.time()) - 500, "exp": int(time.time()) - 400})
    assert flow.hop(root_code, expired).json()["error"] == "invalid_grant"
    header, payload, sig = poc_proof(rsa_key).split(".")
    assert flow.hop(root_code, f"{header}.{payload}.{sig[::-1]}").json()["error"] == "invalid_grant"


def test_relaxed_mode_checks_claims_that_are_present(flow, alice, planner, settings):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "RELAXED_PROOFS": True}
    root_code, _ = flow.authorize(alice)
    assert flow.hop(root_code, planner.proof(root_code, aud="https://elsewhere")).json()["error"] == "invalid_grant"
    assert flow.hop(root_code, planner.proof("another-code")).json()["error"] == "invalid_grant"  # c_hash
