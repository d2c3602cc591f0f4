"""A lost hop response can be retried: the identical request (same client, previous
code, proof, scope and code_challenge) returns the same step and the same code, not
an error, and takes no second fan-out slot. Anything different with a used jti is
still refused."""

import pytest

from chain_grant.client import pkce_pair
from chain_grant.models import ChainedGrant


@pytest.fixture
def hop_request(flow, alice, planner):
    root, _ = flow.authorize(alice, scope="openid read")
    verifier, challenge = pkce_pair()
    proof = planner.proof(root, aud=flow.issuer)
    return root, proof, verifier, challenge


def hop(flow, root, proof, challenge, **extra):
    return flow.hop(root, proof, code_challenge=challenge, code_challenge_method="S256", **extra)


def test_the_identical_retry_gets_the_same_step_and_code(flow, hop_request):
    root, proof, verifier, challenge = hop_request
    first = hop(flow, root, proof, challenge)
    again = hop(flow, root, proof, challenge)
    assert first.status_code == again.status_code == 200, again.content
    assert first.json() == again.json()
    assert ChainedGrant.objects.filter(kind="agent").count() == 1
    assert ChainedGrant.objects.get(kind="user").children_count == 1
    assert flow.exchange(first.json()["authorization_code"], verifier).status_code == 200


def test_a_retry_with_a_linear_chain_keeps_the_chain_alive(flow, hop_request, settings, make_agent):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "MAX_CHILDREN": 1}
    root, proof, _, challenge = hop_request
    first = hop(flow, root, proof, challenge).json()
    assert hop(flow, root, proof, challenge).json() == first
    other = make_agent("other", scopes="openid read")
    refused = flow.hop(root, other.proof(root, aud=flow.issuer))
    assert refused.json()["error_description"].endswith("fan-out limit (MAX_CHILDREN).")


@pytest.mark.parametrize(
    "change",
    [
        {"scope": "openid"},  # another scope
        {"code_challenge": pkce_pair()[1]},  # another PKCE challenge: another code holder
    ],
)
def test_a_different_request_with_a_used_jti_is_refused(flow, hop_request, change):
    root, proof, _, challenge = hop_request
    assert hop(flow, root, proof, challenge).status_code == 200
    data = {"code_challenge": challenge, "code_challenge_method": "S256", **change}
    response = flow.hop(root, proof, **data)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "Proof jti was already used."}
    assert ChainedGrant.objects.filter(kind="agent").count() == 1


def test_another_client_replaying_the_request_gets_nothing(flow, hop_request, make_app):
    root, proof, _, challenge = hop_request
    assert hop(flow, root, proof, challenge).status_code == 200
    other = make_app("other-client")
    response = flow.hop(root, proof, app=other, code_challenge=challenge, code_challenge_method="S256")
    assert response.status_code == 400 and "authorization_code" not in response.json()


def test_no_retry_once_the_code_was_exchanged(flow, hop_request):
    root, proof, verifier, challenge = hop_request
    code = hop(flow, root, proof, challenge).json()["authorization_code"]
    assert flow.exchange(code, verifier).status_code == 200
    response = hop(flow, root, proof, challenge)
    assert response.status_code == 400 and "authorization_code" not in response.json()
