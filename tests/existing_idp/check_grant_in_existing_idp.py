"""code_chain inside an existing IdP: its own validator (``AcmeChainValidator`` =
``ChainValidatorMixin`` + ``AcmeValidator``) and chain_grant mounted under ``/o/``.

Runs only under tests.existing_idp.settings (see tests/test_existing_idp.py).
"""

import json
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.core import checks
from jwcrypto import jwk, jwt
from oauth2_provider.settings import oauth2_settings

from chain_grant.models import ChainedGrant
from chain_grant.validators import ChainValidatorMixin
from tests.helpers import authorize_params

from .conftest import ISSUER, PREFIX
from .validators import TENANT, AcmeChainValidator, AcmeValidator

pytestmark = pytest.mark.django_db


def id_token_claims(client, id_token):
    """Verify an ID token against this IdP's JWKS and return its claims."""
    keys = jwk.JWKSet.from_json(client.get(f"{PREFIX}/.well-known/jwks.json").content)
    return json.loads(jwt.JWT(jwt=id_token, key=keys, expected_type="JWS").claims)


def test_the_idps_own_validator_is_in_use_and_checks_pass():
    validator = oauth2_settings.OAUTH2_VALIDATOR_CLASS
    assert validator is AcmeChainValidator
    mro = validator.__mro__
    assert mro.index(ChainValidatorMixin) < mro.index(AcmeValidator)  # the mixin wraps the IdP's methods
    errors = [m for m in checks.run_checks() if m.id.startswith("chain_grant.") and m.is_serious()]
    assert errors == []


def test_endpoints_live_under_o_and_discovery_says_so(client):
    data = client.get(f"{PREFIX}/.well-known/openid-configuration").json()
    assert data["issuer"] == ISSUER == "http://testserver/o"
    assert data["token_endpoint"] == "http://testserver/o/token/"
    assert data["authorization_endpoint"].startswith("http://testserver/o/authorize")
    assert data["introspection_endpoint"].startswith("http://testserver/o/introspect")
    assert "code_chain" in data["grant_types_supported"]
    assert client.get("/oauth/.well-known/openid-configuration").status_code == 404


def test_chain_through_the_existing_idp(acme, alice, make_agent, calls):
    planner = make_agent("planner")
    researcher = make_agent("researcher", scopes="openid read")

    root_code, _ = acme.authorize(alice, scope="openid read write")

    hop1 = acme.hop(root_code, planner.proof(root_code, aud=ISSUER))
    assert hop1.status_code == 200, hop1.content
    body1 = hop1.json()
    assert body1["depth"] == 1 and body1["scope"] == "openid read write"
    research_code, research_verifier, body2 = acme.advance(body1["authorization_code"], researcher)
    assert body2["depth"] == 2 and body2["scope"] == "openid read"
    assert body2["chain_id"] == body1["chain_id"]

    calls.clear()
    token = acme.exchange(research_code, research_verifier)
    assert token.status_code == 200, token.content
    body = token.json()
    assert body["scope"] == "openid read"
    # The IdP's own hooks ran under the mixin for the chained code...
    assert calls["validate_code"] == 1 and calls["save_bearer_token"] == 1
    assert body["acme_tenant"] == TENANT  # ...including what its save_bearer_token adds

    info = acme.introspect(body["access_token"])
    assert info["active"] is True and info["username"] == "alice"
    assert info["chain_id"] == body1["chain_id"] and info["chain_depth"] == 2
    assert info["act"] == {"sub": "researcher", "act": {"sub": "planner"}}

    claims = id_token_claims(acme.client, body["id_token"])
    assert claims["iss"] == ISSUER
    assert claims["sub"] == str(alice.pk)
    assert claims["acme_tenant"] == TENANT

    userinfo = acme.userinfo(body["access_token"])
    assert userinfo.status_code == 200, userinfo.content
    assert userinfo.json()["acme_tenant"] == TENANT and userinfo.json()["sub"] == str(alice.pk)

    step = ChainedGrant.objects.get(subject="researcher")
    assert step.exchanged_at is not None and step.access_token_id is not None


def test_plain_code_flow_keeps_the_idps_behaviour(acme, alice):
    code, verifier = acme.authorize(alice, scope="openid read")
    token = acme.exchange(code, verifier)
    assert token.status_code == 200, token.content
    body = token.json()
    assert body["acme_tenant"] == TENANT
    assert id_token_claims(acme.client, body["id_token"])["acme_tenant"] == TENANT
    info = acme.introspect(body["access_token"])
    assert info["active"] and "chain_id" not in info
    assert not ChainedGrant.objects.exists()


def test_proof_must_be_addressed_to_this_issuer(acme, alice, planner):
    root_code, _ = acme.authorize(alice)
    # Addressed to the other mounting (idp_project's /oauth issuer): refused here.
    response = acme.hop(root_code, planner.proof(root_code, aud="http://testserver/oauth"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "aud" in response.json()["error_description"]
    assert acme.hop(root_code, planner.proof(root_code, aud=ISSUER)).status_code == 200


def test_the_idps_scope_policy_still_refuses(acme, alice, calls):
    params, _ = authorize_params(acme.app, scope="openid forbidden")
    acme.client.force_login(alice)
    response = acme.client.get(f"{PREFIX}/authorize/?" + urlencode(params))
    assert response.status_code == 302, response.content
    query = parse_qs(urlparse(response["Location"]).query)
    assert query["error"] == ["invalid_scope"] and "code" not in query
    assert calls["validate_scopes"] >= 1


def test_a_hop_cannot_add_a_scope_the_idp_refused(acme, alice, make_agent):
    agent = make_agent("greedy", scopes="openid read forbidden")
    root_code, _ = acme.authorize(alice, scope="openid read")
    response = acme.hop(root_code, agent.proof(root_code, aud=ISSUER), scope="read forbidden")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_replayed_chained_code_revokes_under_the_idps_validator(acme, alice, planner):
    root_code, _ = acme.authorize(alice, scope="openid read")
    code, verifier, _ = acme.advance(root_code, planner)
    first = acme.exchange(code, verifier)
    assert first.status_code == 200, first.content
    replay = acme.exchange(code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert acme.introspect(first.json()["access_token"])["active"] is False


def test_the_idps_client_policy_applies_to_exchanges(acme, alice, make_app, make_agent):
    suspended = make_app("suspended-client")
    code, verifier = acme.authorize(alice, scope="openid read", app=suspended)
    response = acme.exchange(code, verifier, app=suspended)
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"


def test_the_idps_client_policy_applies_to_hops(acme, alice, make_app, make_agent):
    suspended = make_app("suspended-client")
    agent = make_agent("planner-s", applications=[suspended])
    root_code, _ = acme.authorize(alice, scope="openid read", app=suspended)
    response = acme.hop(root_code, agent.proof(root_code, aud=ISSUER), app=suspended)
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"
