"""A whole chain through the real endpoints: a root code from the authorize
endpoint, agent hops with a fan-out of 2, exchange of a leaf, introspection."""

import pytest

from chain_grant.core import integrity
from chain_grant.models import ChainedGrant

pytestmark = pytest.mark.django_db


def test_root_fanout_exchange_and_introspection(flow, alice, make_agent):
    planner = make_agent("planner")
    researcher = make_agent("researcher", scopes="openid read")
    security = make_agent("security", scopes="openid read")
    merger = make_agent("merger", scopes="openid read write")

    root_code, _ = flow.authorize(alice, scope="openid read write")
    planner_code, _, hop1 = flow.advance(root_code, planner)
    assert hop1["depth"] == 1 and hop1["scope"] == "openid read write" and hop1["expires_in"] == 600

    research_code, _, hop2 = flow.advance(planner_code, researcher)
    security_code, _, hop3 = flow.advance(planner_code, security)
    merger_code, merger_verifier, hop4 = flow.advance(research_code, merger)
    assert hop2["scope"] == hop3["scope"] == "openid read"
    assert hop4["scope"] == "openid read"  # merger may write, but the parent could not: agents only narrow
    assert hop1["chain_id"] == hop2["chain_id"] == hop3["chain_id"] == hop4["chain_id"]

    root = ChainedGrant.objects.get(pk=hop1["chain_id"])
    steps = {s.subject: s for s in ChainedGrant.objects.chain(root.pk)}
    assert root.kind == "user" and root.user == alice and root.depth == 0 and root.root_id == root.pk
    assert steps["planner"].parent_id == root.pk
    assert steps["researcher"].parent_id == steps["security"].parent_id == steps["planner"].pk
    assert steps["merger"].parent_id == steps["researcher"].pk and steps["merger"].depth == 3
    assert ChainedGrant.objects.get(pk=steps["planner"].pk).children_count == 2
    assert all(s.kind == "agent" and s.user == alice for s in steps.values() if s.depth)
    assert integrity.verify_chain(root.pk).ok

    token = flow.exchange(merger_code, merger_verifier)
    assert token.status_code == 200, token.content
    body = token.json()
    assert body["scope"] == "openid read"
    assert "refresh_token" in body and "id_token" in body  # openid granted → id_token

    info = flow.introspect(body["access_token"])
    assert info["active"] is True
    assert info["username"] == "alice"
    assert info["scope"] == "openid read"
    assert info["chain_id"] == hop1["chain_id"]
    assert info["chain_depth"] == 3
    assert info["act"] == {"sub": "merger", "act": {"sub": "researcher", "act": {"sub": "planner"}}}

    merger_step = ChainedGrant.objects.get(pk=steps["merger"].pk)
    assert merger_step.exchanged_at is not None and merger_step.access_token_id is not None


def test_each_step_exchanges_for_its_own_scope_only(flow, alice, make_agent):
    planner = make_agent("planner", scopes="openid read write")
    reader = make_agent("reader", scopes="read")
    root_code, _ = flow.authorize(alice, scope="openid read write")
    planner_code, planner_verifier, _ = flow.advance(root_code, planner)
    reader_code, reader_verifier, _ = flow.advance(planner_code, reader)

    reader_token = flow.exchange(reader_code, reader_verifier).json()
    planner_token = flow.exchange(planner_code, planner_verifier).json()
    assert reader_token["scope"] == "read"
    assert "id_token" not in reader_token  # no openid on that step
    assert planner_token["scope"] == "openid read write"
    assert flow.introspect(planner_token["access_token"])["act"] == {"sub": "planner"}


def test_explicit_scope_narrows(flow, alice, planner):
    root_code, _ = flow.authorize(alice, scope="openid read write")
    response = flow.hop(root_code, planner.proof(root_code), scope="read")
    assert response.status_code == 200
    assert response.json()["scope"] == "read"


def test_response_is_not_cached_and_poc_paths_work(flow, alice, planner):
    root_code, _ = flow.authorize(alice)
    response = flow.hop(root_code, planner.proof(root_code))  # POST /oauth/token, no slash, as the PoC
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert set(response.json()) == {"authorization_code", "expires_in", "scope", "chain_id", "depth"}


def test_root_code_can_still_be_exchanged_after_chaining(flow, alice, planner):
    root_code, verifier = flow.authorize(alice, scope="openid read")
    flow.advance(root_code, planner)
    token = flow.exchange(root_code, verifier)
    assert token.status_code == 200
    info = flow.introspect(token.json()["access_token"])
    assert info["chain_depth"] == 0 and "act" not in info


def test_refreshed_token_keeps_its_step(flow, alice, planner):
    root_code, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root_code, planner)
    token = flow.exchange(code, verifier).json()
    refreshed = flow.client.post(
        "/oauth/token", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}, **flow.auth()
    )
    assert refreshed.status_code == 200, refreshed.content
    info = flow.introspect(refreshed.json()["access_token"])
    assert info["act"] == {"sub": "planner"} and info["chain_depth"] == 1


def test_plain_authorization_code_flow_is_unchanged(flow, alice):
    code, verifier = flow.authorize(alice, scope="openid read")
    token = flow.exchange(code, verifier)
    assert token.status_code == 200
    info = flow.introspect(token.json()["access_token"])
    assert info["active"] and "chain_id" not in info
    assert not ChainedGrant.objects.exists()


def test_discovery_lists_code_chain(client):
    data = client.get("/oauth/.well-known/openid-configuration").json()
    assert "code_chain" in data["grant_types_supported"]
    assert data["token_endpoint"] == "http://testserver/oauth/token"
    assert data["issuer"] == "http://testserver/oauth"
    assert data["introspection_endpoint"].startswith("http://testserver/oauth/introspect")
    metadata = client.get("/oauth/.well-known/oauth-authorization-server").json()
    assert "code_chain" in metadata["grant_types_supported"]
