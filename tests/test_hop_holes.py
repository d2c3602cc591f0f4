"""Smaller holes of the hop, closed: a public client's hop needs the previous code's
PKCE verifier, and a hop never makes a step with no scope."""

import pytest
from django.test import Client
from oauth2_provider.models import get_application_model

from chain_grant.client import pkce_pair
from chain_grant.models import ChainedGrant
from tests.helpers import Flow


@pytest.fixture
def public(make_app):
    return make_app("public-app", client_type=get_application_model().CLIENT_PUBLIC, client_secret="")


def public_hop(app, code, proof, **extra):
    _, challenge = pkce_pair()
    data = {
        "grant_type": "code_chain",
        "client_id": app.client_id,
        "authorization_code": code,
        "id_token": proof,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return Client().post("/oauth/token", data)


def error(response):
    return response.status_code, response.json().get("error"), response.json().get("error_description", "")


def test_a_stolen_public_code_cannot_be_chained_without_its_verifier(public, alice, make_agent):
    planner = make_agent("planner", applications=[public])
    owner = Flow(Client(), public)
    code, verifier = owner.authorize(alice, scope="openid read")
    status, err, description = error(public_hop(public, code, planner.proof(code, aud=owner.issuer)))
    assert (status, err) == (400, "invalid_grant") and "code_verifier" in description
    wrong, _ = pkce_pair()
    status, err, description = error(
        public_hop(public, code, planner.proof(code, aud=owner.issuer), code_verifier=wrong)
    )
    assert (status, err) == (400, "invalid_grant") and "does not match" in description
    assert not ChainedGrant.objects.filter(kind="agent").exists()

    ok = public_hop(public, code, planner.proof(code, aud=owner.issuer), code_verifier=verifier)
    assert ok.status_code == 200, ok.content


def test_a_confidential_client_may_also_prove_the_verifier(flow, alice, planner):
    root, verifier = flow.authorize(alice)
    wrong, _ = pkce_pair()
    response = flow.hop(root, planner.proof(root, aud=flow.issuer), code_verifier=wrong)
    assert error(response)[:2] == (400, "invalid_grant")
    assert flow.hop(root, planner.proof(root, aud=flow.issuer), code_verifier=verifier).status_code == 200


def test_a_duplicate_code_verifier_is_refused(flow, alice, planner):
    root, verifier = flow.authorize(alice)
    response = flow.client.post(
        "/oauth/token",
        {
            "grant_type": "code_chain",
            "authorization_code": root,
            "id_token": planner.proof(root, aud=flow.issuer),
            "code_verifier": [verifier, verifier],
        },
        **flow.auth(),
    )
    assert error(response)[:2] == (400, "invalid_request")


def test_an_empty_scope_is_invalid_scope(flow, alice, planner):
    root, _ = flow.authorize(alice)
    assert error(flow.hop(root, planner.proof(root, aud=flow.issuer), scope=""))[:2] == (400, "invalid_scope")
    assert error(flow.hop(root, planner.proof(root, aud=flow.issuer), scope="  "))[:2] == (400, "invalid_scope")
    assert not ChainedGrant.objects.filter(kind="agent").exists()


def test_an_agent_that_may_hold_none_of_the_scopes_gets_no_step(flow, alice, make_agent):
    stranger = make_agent("stranger", scopes="email")
    root, _ = flow.authorize(alice, scope="openid read")
    status, err, description = error(flow.hop(root, stranger.proof(root, aud=flow.issuer)))
    assert (status, err) == (400, "invalid_scope") and "none of" in description
    assert not ChainedGrant.objects.filter(kind="agent").exists()
