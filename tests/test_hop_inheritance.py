"""What a hop inherits from its parent beyond the scope: an RFC 8707 resource
restriction is never widened, and a chain acting for a disabled person stops."""

from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from oauth2_provider.models import get_access_token_model, get_grant_model

from chain_grant.client import pkce_pair
from chain_grant.core import lifecycle
from chain_grant.core.codes import code_digest
from chain_grant.models import ChainedGrant

from .conftest import REDIRECT_URI

pytestmark = pytest.mark.django_db
RESOURCE = "https://api.example.com/"


def authorize_with_resource(flow, client, user):
    verifier, challenge = pkce_pair()
    params = {
        "client_id": flow.app.client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid read",
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": RESOURCE,
    }
    client.force_login(user)
    url = "/oauth/authorize/?" + urlencode(params)
    assert client.get(url).status_code == 200
    response = client.post(url, {**params, "allow": "Authorize"})
    client.logout()
    return parse_qs(urlparse(response["Location"]).query)["code"][0], verifier


def test_a_resource_restriction_carries_down_the_chain(flow, client, alice, planner, make_agent):
    root, _ = authorize_with_resource(flow, client, alice)
    assert get_grant_model().objects.get(code=code_digest(root)).resource == [RESOURCE]
    code1, _, _ = flow.advance(root, planner)
    critic = make_agent("critic", scopes="openid read")
    code2, verifier2, _ = flow.advance(code1, critic)
    assert get_grant_model().objects.get(code=code_digest(code1)).resource == [RESOURCE]
    assert get_grant_model().objects.get(code=code_digest(code2)).resource == [RESOURCE]
    assert flow.exchange(code2, verifier2).status_code == 200
    assert get_access_token_model().objects.get().resource == [RESOURCE]  # the only token issued


def test_an_unrestricted_code_stays_unrestricted(flow, alice, planner):
    root, _ = flow.authorize(alice)
    code1, _, _ = flow.advance(root, planner)
    assert get_grant_model().objects.get(code=code_digest(code1)).resource == []


def test_a_chain_acting_for_a_disabled_person_stops(flow, alice, planner, make_agent, settings):
    # ON_DISABLE="refuse": the hop is refused for the person; by default the chain is
    # also revoked (tests/test_disabling.py).
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "ON_DISABLE": "refuse"}
    root, _ = flow.authorize(alice)
    code1, _, _ = flow.advance(root, planner)
    alice.is_active = False
    alice.save()
    critic = make_agent("critic", scopes="openid read")
    response = flow.hop(code1, critic.proof(code1, aud=flow.issuer))
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "The person this chain acts for is disabled.",
    }
    assert ChainedGrant.objects.count() == 2 and lifecycle.find_step(code1).children_count == 0
