"""Hops (code_chain) through the real endpoints: a root code from the authorize
endpoint, agent hops with a fan-out of 2, exchange of a leaf, introspection; each step
exchanges for its own scope. What a hop inherits from its parent beyond the scope: an
RFC 8707 resource restriction is never widened, a chain acting for a disabled person
stops, a parent whose DOT grant is gone cannot be chained. (Every refusal:
tests/test_negative_matrix.py.)"""

import pytest
from oauth2_provider.models import get_access_token_model, get_grant_model

from chain_grant.core import integrity, lifecycle, locks
from chain_grant.core.codes import code_digest
from chain_grant.models import ChainedGrant
from tests.helpers import error_of

pytestmark = pytest.mark.django_db
Grant = get_grant_model()
RESOURCE = "https://api.example.com/"


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
    refreshed = flow.refresh(token["refresh_token"])
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


# DOT's default list, less what the project's RFC 9700 gates refuse (implicit, password).
SERVED = ["authorization_code", "client_credentials", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]


CHAIN_GRANTS = ["code_chain", "urn:ietf:params:oauth:grant-type:token-exchange"]


def test_discovery_lists_code_chain_after_dots_grants(client):
    data = client.get("/oauth/.well-known/openid-configuration").json()
    assert data["grant_types_supported"] == [*SERVED, *CHAIN_GRANTS]
    assert data["token_endpoint"] == "http://testserver/oauth/token/"  # DOT's path, as DOT says it
    assert data["issuer"] == "http://testserver/oauth"
    assert data["introspection_endpoint"] == "http://testserver/oauth/introspect/"
    metadata = client.get("/oauth/.well-known/oauth-authorization-server").json()
    assert metadata["grant_types_supported"] == [*SERVED, *CHAIN_GRANTS]
    assert metadata["token_endpoint"] == data["token_endpoint"]


def test_an_idps_own_grant_list_is_kept_and_code_chain_added_once(client, settings):
    for listed in (["authorization_code"], ["authorization_code", "code_chain"]):
        settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OAUTH2_GRANT_TYPES_SUPPORTED": listed}
        for url in ("/oauth/.well-known/openid-configuration", "/oauth/.well-known/oauth-authorization-server"):
            assert client.get(url).json()["grant_types_supported"] == ["authorization_code", *CHAIN_GRANTS]


def test_the_urls_are_dots_paths_and_names_in_dots_order():
    from oauth2_provider import urls as dot_urls

    from chain_grant import urls as chain_urls

    def shape(patterns):
        return [(str(p.pattern), p.name) for p in patterns]

    wallet = shape(chain_urls.wallet_urlpatterns) + shape(chain_urls.record_urlpatterns)  # chain_grant's own
    ours = [entry for entry in shape(chain_urls.urlpatterns) if entry not in wallet]
    assert ours == shape(dot_urls.urlpatterns)
    for group in ("metadata", "base", "management", "oidc", "dcr"):
        mine = [e for e in shape(getattr(chain_urls, f"{group}_urlpatterns")) if e not in wallet]
        assert mine == shape(getattr(dot_urls, f"{group}_urlpatterns")), group
    assert all(p.name is None for p in chain_urls.poc_urlpatterns)  # aliases: reverse() stays DOT's


def test_management_pages_are_staff_only_in_the_example_idp(client, alice, django_user_model):
    assert client.get("/oauth/applications/register/").status_code == 302  # anonymous: to the login
    client.force_login(alice)
    response = client.get("/oauth/applications/register/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    staff = django_user_model.objects.create_user("staffer", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/oauth/applications/").status_code == 200


# --- what a hop inherits from its parent beyond the scope -------------------------------------


def test_a_resource_restriction_carries_down_the_chain(flow, alice, planner, make_agent):
    root, _ = flow.authorize(alice, scope="openid read", resource=RESOURCE)
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


@pytest.mark.parametrize("parent", ["agent step", "chain root"])
def test_parent_whose_dot_grant_was_deleted_cannot_be_chained(parent, flow, alice, planner, make_agent):
    """Rule: a step's code lives in DOT's Grant table; once that row is gone (an admin
    deleted it, cleartokens), the code cannot be chained even though the step is
    neither exchanged, revoked nor expired."""
    researcher = make_agent("researcher")
    root_code, _ = flow.authorize(alice, scope="openid read")
    p_code, _, _ = flow.advance(root_code, planner)
    code = p_code if parent == "agent step" else root_code
    step = lifecycle.find_step(code)
    Grant.objects.filter(pk=step.grant_id).delete()
    assert step.state == "live"

    assert error_of(flow.hop(code, researcher.proof(code))) == (400, "invalid_grant")
    step.refresh_from_db()
    assert step.children_count == (0 if parent == "agent step" else 1)
    assert not ChainedGrant.objects.filter(agent=researcher.model).exists()


def test_a_hop_finds_and_locks_its_chain_in_one_statement(flow, alice, planner):
    root, _ = flow.authorize(alice, scope="openid read")
    code, _, _ = flow.advance(root, planner)
    step = ChainedGrant.objects.get(code_digest=code_digest(code))
    assert locks.lock_chain_of(code_digest(code)) == step.root_id != step.pk
    assert locks.lock_chain_of(code_digest("no-such-code")) is None
