"""Disabling an actor stops everything it holds (ON_DISABLE="revoke", the default):
an agent, one of its keys, a person's account, a client's chain switch. The live
codes and tokens of every step they acted in, and their subtrees, are revoked,
whichever way the actor was disabled. ON_DISABLE="refuse" only refuses new hops."""

import pytest
from django.core.management import call_command
from oauth2_provider.models import get_access_token_model

from chain_grant.core import agents, lifecycle
from chain_grant.models import Agent, AgentKey, ChainClient, ChainedGrant

AccessToken = get_access_token_model()


@pytest.fixture
def chain(flow, alice, planner, make_agent):
    """alice → planner → researcher (exchanged: a token) and planner → writer (a live code)."""
    researcher = make_agent("researcher", scopes="openid read")
    writer = make_agent("writer", scopes="openid read")
    root, _ = flow.authorize(alice, scope="openid read")
    planned, _, _ = flow.advance(root, planner)
    researched, verifier, _ = flow.advance(planned, researcher)
    token = flow.exchange(researched, verifier).json()["access_token"]
    written, written_verifier, _ = flow.advance(planned, writer)
    return {"planned": planned, "researched": researched, "token": token, "written": (written, written_verifier)}


def assert_all_dead(flow, chain, reason_fragment):
    assert flow.introspect(chain["token"])["active"] is False
    written, verifier = chain["written"]
    assert flow.exchange(written, verifier).json()["error"] == "invalid_grant"
    step = lifecycle.find_step(chain["researched"])
    assert step.revoked_at is not None and reason_fragment in step.revoked_reason
    assert not AccessToken.objects.exists()


def test_disabling_an_agent_by_command_revokes_its_steps_and_below(flow, chain, planner):
    call_command("chain_grant_agent", "disable", "planner")
    assert_all_dead(flow, chain, "agent planner disabled")


def test_disabling_an_agent_in_the_admin_way_revokes(flow, chain, planner):
    agent = Agent.objects.get(identifier="planner")
    agent.is_active = False
    agent.save()  # what the admin's change form does
    assert_all_dead(flow, chain, "agent planner disabled")


def test_disabling_a_key_revokes_what_it_signed(flow, chain, planner):
    key = AgentKey.objects.get(agent__identifier="planner")
    agents.disable(key.agent, kid=key.kid)
    assert_all_dead(flow, chain, f"agent key {key.kid} disabled")


def test_disabling_one_key_spares_steps_signed_by_another(flow, chain, make_agent):
    make_agent("bystander", scopes="openid read")
    key = AgentKey.objects.get(agent__identifier="bystander")
    key.is_active = False
    key.save()
    assert flow.introspect(chain["token"])["active"] is True


def test_deactivating_the_person_revokes_their_chains(flow, chain, alice):
    alice.is_active = False
    alice.save()
    assert_all_dead(flow, chain, "account was disabled")


def test_disabling_the_client_revokes_its_chains(flow, chain, app):
    client = ChainClient.objects.get(application=app)
    client.code_chain_enabled = False
    client.save()
    assert_all_dead(flow, chain, "client disabled")


def test_an_agent_disabled_without_signals_still_cannot_exchange(flow, chain):
    """A queryset update sends no signal: the exchange itself refuses the code."""
    Agent.objects.filter(identifier="writer").update(is_active=False)
    written, verifier = chain["written"]
    response = flow.exchange(written, verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_refuse_mode_only_refuses_new_hops(flow, chain, settings, make_agent):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "ON_DISABLE": "refuse"}
    call_command("chain_grant_agent", "disable", "planner")
    assert flow.introspect(chain["token"])["active"] is True
    written, verifier = chain["written"]
    assert flow.exchange(written, verifier).status_code == 200
    assert not ChainedGrant.objects.filter(revoked_at__isnull=False).exists()


def test_an_unknown_on_disable_value_is_a_check_error(settings):
    from chain_grant.checks import check_settings

    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "ON_DISABLE": "ignore"}
    assert "chain_grant.E006" in {e.id for e in check_settings()}


def test_an_agent_disabled_without_signals_cannot_pass_the_chain_on_by_either_door(flow, chain, make_agent):
    """As its code cannot be exchanged: neither a code_chain hop from its code nor a
    token exchange of its token makes a new step (nothing written)."""
    from chain_grant.client import actor_token
    from chain_grant.core.token_exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TOKEN_TYPE
    from tests.helpers import ISSUER

    critic = make_agent("critic", scopes="openid read")
    Agent.objects.filter(identifier__in=["writer", "researcher"]).update(is_active=False)
    before = ChainedGrant.objects.count()
    written, _ = chain["written"]
    hop = flow.hop(written, critic.proof(written, aud=flow.issuer))
    assert hop.status_code == 400 and hop.json()["error"] == "invalid_grant", hop.content
    assert "disabled" in hop.json()["error_description"]
    data = {
        "grant_type": GRANT_TYPE,
        "subject_token": chain["token"],
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "actor_token": actor_token(critic.key, sub="critic", aud=ISSUER, subject_token=chain["token"]),
        "actor_token_type": JWT_TOKEN_TYPE,
    }
    response = flow.client.post("/oauth/token/", data, **flow.auth())
    assert response.status_code == 400 and response.json()["error"] == "invalid_request", response.content
    assert "disabled" in response.json()["error_description"]
    assert ChainedGrant.objects.count() == before
