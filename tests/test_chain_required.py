"""The resource-server glue (``chain_grant.oauth.chain_required``) inside the IdP: the
plain-Django decorator reads the chain from the IdP's database, with a bearer or a DPoP
token, and refuses as RFC 6750 says; the database and introspection give one chain view;
a remote resource server keeps the chain claims exactly as long as DOT keeps the token."""

from __future__ import annotations

import json
from datetime import timedelta
from unittest import mock

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.http import JsonResponse
from django.test import RequestFactory
from django.utils import timezone
from oauth2_provider.models import get_access_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator

from chain_grant.client import generate_key
from chain_grant.client.jose import sha256_hex
from chain_grant.client.keys import dpop_proof
from chain_grant.core import lineage
from chain_grant.core.requirements import view_from_claims
from chain_grant.oauth import chain_required as rs
from tests.helpers import make_token, user_step
from tests.test_dpop import TOKEN_URL, exchange, hop
from tests.test_joins import Branches

pytestmark = pytest.mark.django_db
URL = "http://testserver/notes/"


@rs.chain_required(actor="writer", person_within=1, scopes=["email"])
def notes(request):
    return JsonResponse({"by": request.chain.actor, "for": request.user.username})


def call(authorization=None, proof=None):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    if proof:
        headers["HTTP_DPOP"] = proof
    return notes(RequestFactory().post("/notes/", **headers))


@pytest.fixture
def writer_code(flow, alice, make_agent):
    """alice → planner → alice's consent → the writer's code (and its verifier)."""
    planner = make_agent("planner", scopes="openid email read")
    writer = make_agent("writer", scopes="openid email")
    root, _ = flow.authorize(alice, scope="openid read")
    code, _, _ = flow.advance(root, planner)
    consent, _ = user_step(flow, alice, code, scope="openid email")
    flow.writer = writer
    return consent


def test_a_bearer_token_meeting_the_requirement_is_served(flow, writer_code):
    code, verifier, _ = flow.advance(writer_code, flow.writer)
    token = flow.exchange(code, verifier).json()["access_token"]
    response = call(f"Bearer {token}")
    assert response.status_code == 200 and json.loads(response.content) == {"by": "writer", "for": "alice"}


def test_a_dpop_token_is_served_with_its_proof_and_refused_as_a_bearer(flow, writer_code):
    key = generate_key("EC")
    bound = hop(flow, writer_code, flow.writer, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    proof = dpop_proof(key, htm="POST", htu=TOKEN_URL)
    token = exchange(flow, bound.json()["authorization_code"], bound.verifier, proof).json()["access_token"]
    ok = call(f"DPoP {token}", dpop_proof(key, htm="POST", htu=URL, access_token=token))
    assert ok.status_code == 200, ok.content
    as_bearer = call(f"Bearer {token}")
    assert as_bearer.status_code == 401 and json.loads(as_bearer.content)["error"] == "invalid_token"
    no_proof = call(f"DPoP {token}")
    assert no_proof.status_code == 401 and no_proof["WWW-Authenticate"].startswith("DPoP error=")


def test_a_dpop_request_is_refused_with_a_dpop_challenge(flow, alice, make_agent):
    """alice → critic (bound): not the writer; the challenge is RFC 9449's, naming it."""
    key = generate_key("EC")
    critic = make_agent("critic", scopes="openid email")
    root, _ = flow.authorize(alice, scope="openid email")
    bound = hop(flow, root, critic, dpop_proof(key, htm="POST", htu=TOKEN_URL))
    proof = dpop_proof(key, htm="POST", htu=TOKEN_URL)
    token = exchange(flow, bound.json()["authorization_code"], bound.verifier, proof).json()["access_token"]
    response = call(f"DPoP {token}", dpop_proof(key, htm="POST", htu=URL, access_token=token))
    assert response.status_code == 403
    assert response["WWW-Authenticate"].startswith(
        'DPoP error="insufficient_scope", error_description="requires the actor writer", algs="'
    )


def test_refusals_are_rfc_6750s(flow, alice, app, writer_code):
    none = call()
    assert none.status_code == 401 and none["WWW-Authenticate"] == "Bearer"
    unknown = call("Bearer nope")
    assert unknown.status_code == 401 and unknown["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    plain = call(f"Bearer {make_token(alice, app, 'email')}")
    assert plain.status_code == 403 and json.loads(plain.content) == {
        "error": "insufficient_scope",
        "error_description": "requires a token issued from an authorization code chain",
    }
    expired = make_token(alice, app, "email", expires_in=-10)
    assert call(f"Bearer {expired}").status_code == 401


def test_the_database_and_introspection_give_one_chain_view(flow, alice, make_agent):
    """Below a join: the line, the depth, the joined inputs and the scopes agree."""
    branches = Branches(flow, alice, make_agent)
    merger_code = branches.join().json()["authorization_code"]
    critic = make_agent("critic", scopes="read write")
    code, verifier, _ = flow.advance(merger_code, critic)
    value = flow.exchange(code, verifier).json()["access_token"]
    token = get_access_token_model().objects.get(token_checksum=sha256_hex(value))
    local = rs.local_view(RequestFactory().get("/"), token)
    assert local == view_from_claims(flow.introspect(value))
    assert local.actor == "critic" and local.depth == 4 and local.joined == {"security", "implementer", "planner"}
    assert [a.kind for a in local.actors] == ["user", "agent", "agent", "agent", "agent"]


LINE = {"chain_id": "x", "chain_depth": 0, "chain_actors": [{"sub": "writer", "kind": "agent"}]}


@pytest.mark.parametrize(
    "malformed",
    [
        {"chain_id": "x", "chain_actors": "writer"},
        {**LINE, "chain_joins": [{"joined": 5}]},  # not iterable: a TypeError, not a ValueError
        {**LINE, "chain_joins": [{"joined": None}]},
        {**LINE, "chain_joins": [{"joined": {"sub": "planner"}}]},  # iterating a dict gives its keys
    ],
    ids=["actors-a-string", "joined-an-int", "joined-null", "joined-an-object"],
)
def test_a_malformed_introspection_answer_is_invalid_token(settings, malformed):
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "RESOURCE_SERVER_INTROSPECTION_URL": "http://idp/i/"}
    token = mock.Mock(token_checksum="c" * 64, scope="email")
    with mock.patch.object(rs, "remote_claims", return_value=malformed), pytest.raises(rs.Refused) as refused:
        rs.chain_view(RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer t"), token)
    assert refused.value.error == "invalid_token"


def test_the_claims_are_kept_as_long_as_dot_keeps_the_token(settings):
    """DOT's introspection (here its answer, without the HTTP) writes a token row that
    lives until exp, at most RESOURCE_SERVER_TOKEN_CACHING_SECONDS; the chain claims are
    cached until that same moment, so the next request asks the IdP nothing."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rs"}}
    now = timezone.now()
    row = mock.Mock(expires=now + timedelta(seconds=120), token_checksum="d" * 64)
    answer = {"active": True, "username": "alice", "chain_id": "c", "chain_depth": 0, "cnf": {"jkt": "k"}, "x": 1}
    calls = []

    def dots(validator, value, *args):  # what DOT does with the answer: the user, then the row
        calls.append(value)
        validator.get_or_create_user_from_content(answer)
        return row

    timeouts = []
    real_set = LocMemCache.set

    def spy(self, key, value, timeout=None, version=None):
        timeouts.append(timeout)
        return real_set(self, key, value, timeout=timeout, version=version)

    with (
        mock.patch.object(OAuth2Validator, "_get_token_from_authentication_server", dots),
        mock.patch.object(OAuth2Validator, "get_or_create_user_from_content"),
        mock.patch.object(rs, "timezone", mock.Mock(now=lambda: now)),
        mock.patch.object(LocMemCache, "set", spy),
    ):
        claims = rs.remote_claims("t", row)
        assert rs.remote_claims("t", row) == claims  # from the cache: no second introspection
        assert rs.ChainResourceValidator()._get_token_from_authentication_server("u", "url", "", ("i", "s")) is row
    assert claims == {"chain_id": "c", "chain_depth": 0, "cnf": {"jkt": "k"}} and calls == ["t", "u"]
    assert timeouts == [120, 120]  # the row's remaining lifetime, not a constant of ours

    inactive = mock.patch.object(OAuth2Validator, "_get_token_from_authentication_server", return_value=None)
    with inactive, pytest.raises(rs.Refused) as refused:  # the IdP says inactive, or cannot be reached
        rs.remote_claims("t", mock.Mock(token_checksum="e" * 64))
    assert refused.value.error == "invalid_token"


def test_a_token_whose_step_link_was_tampered_with_is_invalid(flow, writer_code):
    code, verifier, _ = flow.advance(writer_code, flow.writer)
    token = flow.exchange(code, verifier).json()["access_token"]
    with mock.patch("chain_grant.core.lineage.step_for_token", side_effect=lineage.UnverifiedLink):
        response = call(f"Bearer {token}")
    assert response.status_code == 401 and json.loads(response.content) == {
        "error": "invalid_token",
        "error_description": "This token's link to its chain step does not match the signed record.",
    }


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer ", "DPoP", "DPoP x", "Basic YTpi", "Bearer \x00", "bearer  a b", "Bearer é", "Token t"],
)
def test_odd_authorization_headers_are_401_never_a_500(authorization):
    response = call(authorization)
    assert response.status_code == 401 and json.loads(response.content)["error"] == "invalid_token"
    assert response["WWW-Authenticate"].startswith(("Bearer", "DPoP"))
