"""The hand-off policy (docs/policy.md): data, per client with a global default, that
says which actor may hand a chain to which (edges), which scopes need a person's fresh
consent, and the depth and fan-out limits. No policy at all: everything as before.

A forbidden edge is ``invalid_grant`` ("hand-off not allowed by policy"), stale consent
``invalid_scope`` telling the client to ask the person; nothing is written either way.
A step records the rule that let it through (covered by its signed record), and a
token's introspection names who may act next (``may_act`` / ``chain_may_act``)."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from chain_grant.core import handoff, integrity, lifecycle
from chain_grant.core.errors import ChainError
from chain_grant.models import ChainedGrant, HandoffPolicy
from tests.helpers import consent_form, consent_landing, consent_url, counts, wallet_landing

pytestmark = pytest.mark.django_db

NOT_ALLOWED = "hand-off not allowed by policy"


@pytest.fixture
def crew(make_agent):
    agents = {
        name: make_agent(name, scopes="openid profile email read write")
        for name in ("planner", "researcher", "writer", "critic", "merger")
    }
    agents["researcher"].model.groups = ["research"]
    agents["researcher"].model.save()
    agents["writer"].model.groups = ["research"]
    agents["writer"].model.save()
    return agents


def refused(response, error, fragment):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == error, body
    assert fragment in body.get("error_description", ""), body
    return body


def policy(application=None, **document):
    return handoff.save_policy(application, document)


# --- no policy: unchanged ------------------------------------------------------------------


def test_without_a_policy_everything_is_allowed_and_nothing_is_recorded(flow, alice, crew):
    root, _ = flow.authorize(alice, scope="openid email read")
    code, verifier, _ = flow.advance(root, crew["planner"])
    code, verifier, _ = flow.advance(code, crew["writer"])
    step = lifecycle.find_step(code)
    assert step.policy_decision == {}
    token = flow.exchange(code, verifier).json()["access_token"]
    info = flow.introspect(token)
    assert "may_act" not in info and "chain_may_act" not in info
    assert integrity.verify_chain(step.root_id).ok


# --- edges --------------------------------------------------------------------------------


def test_a_forbidden_edge_is_invalid_grant_and_writes_nothing(flow, alice, crew):
    policy(edges=["person -> planner", "planner -> researcher"])
    root, _ = flow.authorize(alice)
    code, _, _ = flow.advance(root, crew["planner"])
    before = counts()
    refused(flow.hop(code, crew["writer"].proof(code)), "invalid_grant", NOT_ALLOWED)
    assert counts() == before
    assert lifecycle.find_step(code).children_count == 0
    flow.advance(code, crew["researcher"])  # the allowed edge still works


def test_the_first_hop_is_from_the_person_pseudo_actor(flow, alice, crew):
    policy(edges=["planner -> researcher"])
    root, _ = flow.authorize(alice)
    refused(flow.hop(root, crew["planner"].proof(root)), "invalid_grant", NOT_ALLOWED)


def test_wildcards_and_groups(flow, alice, crew):
    policy(edges=["* -> planner", "planner -> group:research", "group:research -> critic"])
    root, _ = flow.authorize(alice)
    planner, _, _ = flow.advance(root, crew["planner"])
    writer, _, _ = flow.advance(planner, crew["writer"])  # writer is in group research
    critic, _, _ = flow.advance(writer, crew["critic"])
    refused(flow.hop(planner, crew["critic"].proof(planner)), "invalid_grant", NOT_ALLOWED)
    step = lifecycle.find_step(critic)
    assert step.policy_decision == {"policy": "default", "edge": "group:research -> critic", "from": "writer"}
    assert lifecycle.find_step(writer).policy_decision["edge"] == "planner -> group:research"


def test_an_agent_named_like_a_keyword_gets_no_keywords_rights(flow, alice, crew, make_agent):
    """``person``/``wallet`` on the from side name a person's or wallet's step, and
    ``group:<name>`` a group: never an agent whose identifier happens to be spelled so."""
    impostor = make_agent("person", scopes="openid read")
    grouped = make_agent("group:research", scopes="openid read")  # in no group at all
    policy(edges=["person -> *", "planner -> group:research"])
    root, _ = flow.authorize(alice)
    code, _, _ = flow.advance(root, impostor)  # a person's step may hand to anyone
    refused(flow.hop(code, crew["critic"].proof(code)), "invalid_grant", NOT_ALLOWED)
    planner, _, _ = flow.advance(root, crew["planner"])
    flow.advance(planner, crew["researcher"])  # in group research
    refused(flow.hop(planner, grouped.proof(planner)), "invalid_grant", NOT_ALLOWED)


def test_a_client_policy_replaces_the_default(flow, alice, crew, app, make_app):
    policy(edges=["person -> planner"])  # the default forbids planner -> writer
    policy(app, edges=["person -> planner", "planner -> writer"])
    root, _ = flow.authorize(alice)
    code, _, _ = flow.advance(root, crew["planner"])
    code, _, _ = flow.advance(code, crew["writer"])
    assert lifecycle.find_step(code).policy_decision["policy"] == app.client_id

    other = make_app("other-client")
    for agent in crew.values():
        agent.model.applications.add(other)
    root, _ = flow.authorize(alice, app=other)
    code, _, _ = flow.advance(root, crew["planner"], app=other)
    assert lifecycle.find_step(code).policy_decision == {
        "policy": "default",
        "edge": "person -> planner",
        "from": "person",
    }
    refused(flow.hop(code, crew["writer"].proof(code), app=other), "invalid_grant", NOT_ALLOWED)


def test_a_join_needs_every_parents_edge(flow, alice, crew):
    policy(edges=["person -> planner", "planner -> researcher", "planner -> writer", "researcher -> merger"])
    root, _ = flow.authorize(alice)
    planner, _, _ = flow.advance(root, crew["planner"])
    research, _, _ = flow.advance(planner, crew["researcher"])
    writing, _, _ = flow.advance(planner, crew["writer"])
    proof = crew["merger"].proof(research, aud=flow.issuer, joined_codes=[writing])
    before = counts()
    refused(flow.hop(research, proof, joined_codes=writing), "invalid_grant", NOT_ALLOWED)  # writer -> merger
    assert counts() == before

    policy(edges=["person -> planner", "planner -> *", "researcher -> merger", "writer -> merger"])
    proof = crew["merger"].proof(research, aud=flow.issuer, joined_codes=[writing])
    response = flow.hop(research, proof, joined_codes=writing)
    assert response.status_code == 200, response.content
    step = lifecycle.find_step(response.json()["authorization_code"])
    assert step.policy_decision["edge"] == "researcher -> merger"
    assert step.policy_decision["joined"] == [{"from": "writer", "edge": "writer -> merger"}]


def test_check_is_callable_from_core_for_other_step_kinds(flow, alice, crew, app):
    """What a token-exchange step calls: the decision, or ChainError(invalid_grant)."""
    policy(edges=["person -> planner"])
    root, _ = flow.authorize(alice)
    code, _, _ = flow.advance(root, crew["planner"])
    parent = lifecycle.find_step(code)
    with pytest.raises(ChainError) as refused_:
        handoff.check(app, parent, "writer", "openid")
    assert refused_.value.error == "invalid_grant" and refused_.value.description == NOT_ALLOWED
    assert handoff.check(app, lifecycle.find_step(root), "planner", "openid")["edge"] == "person -> planner"


def test_a_wallet_rooted_chain_hands_off_from_the_wallet_pseudo_actor(wflow, wallet, flow, crew):
    policy(edges=["wallet -> planner", "person -> writer"])
    pending = wflow.start()
    wallet.respond(pending.url, post=wflow.post)
    root = wallet_landing(wflow.complete(pending))["code"]
    refused(flow.hop(root, crew["writer"].proof(root)), "invalid_grant", NOT_ALLOWED)
    code, _, _ = flow.advance(root, crew["planner"])
    assert lifecycle.find_step(code).policy_decision == {
        "policy": "default",
        "edge": "wallet -> planner",
        "from": "wallet",
    }


def test_edges_never_refuse_a_person_or_a_wallet(flow, alice, crew, client, wflow, wallet):
    """A person may always take a chain back (no edge names them as receiver); their
    step records the policy it was admitted under."""
    policy(edges=["person -> planner"])
    root, _ = flow.authorize(alice)
    planner, _, _ = flow.advance(root, crew["planner"])
    url, _ = consent_url(flow.app, planner, scope="openid read")
    client.force_login(alice)
    consented = consent_landing(client.post(url, consent_form(url)))["code"]
    assert lifecycle.find_step(consented).policy_decision == {"policy": "default"}
    pending = wflow.start(code=planner, scope="read")
    wallet.respond(pending.url, post=wflow.post)
    step = lifecycle.find_step(wallet_landing(wflow.complete(pending))["code"])
    assert step.kind == "wallet" and step.policy_decision == {"policy": "default"}
    assert integrity.verify_chain(step.root_id).ok


def test_a_wallet_step_respects_the_policy_fan_out(flow, alice, crew, app, wflow, wallet):
    policy(app, max_children=1)
    root, _ = flow.authorize(alice)
    flow.advance(root, crew["planner"])
    before = counts()
    query = wallet_landing(wflow.open(code=root, scope="read"), error="invalid_request")
    assert "fan-out limit (the hand-off policy's max_children)" in query["error_description"]
    assert counts() == before


# --- fresh consent --------------------------------------------------------------------------


def test_stale_consent_by_hops_asks_for_the_person(flow, alice, crew, client):
    policy(fresh_consent={"email": {"hops": 1}})
    root, _ = flow.authorize(alice, scope="openid email read")
    planner, _, _ = flow.advance(root, crew["planner"])  # one hop after alice's consent at authorize
    assert lifecycle.find_step(planner).policy_decision["fresh_consent"]["email"]["hops"] == 1
    before = counts()
    body = refused(flow.hop(planner, crew["researcher"].proof(planner)), "invalid_scope", "code=<previous>")
    assert "email" in body["error_description"]
    assert counts() == before
    # Without email the hop is fine.
    flow.advance(planner, crew["researcher"], scope="openid read")

    # alice consents again (a user step with code=<previous>): one more hop may carry email.
    url, _ = consent_url(flow.app, planner, scope="openid email read")
    client.force_login(alice)
    consented = consent_landing(client.post(url, consent_form(url)))["code"]
    code, _, _ = flow.advance(consented, crew["researcher"])
    decision = lifecycle.find_step(code).policy_decision
    assert decision["fresh_consent"]["email"]["step"] == str(lifecycle.find_step(consented).pk)


def test_stale_consent_by_minutes(flow, alice, crew):
    policy(fresh_consent={"email": {"minutes": 10}})
    root, _ = flow.authorize(alice, scope="openid email read")
    planner, _, _ = flow.advance(root, crew["planner"])
    # alice consented at authorize (the root): move that back an hour.
    ChainedGrant.objects.filter(pk=lifecycle.find_step(planner).root_id).update(
        created=timezone.now() - timedelta(hours=1)
    )
    refused(flow.hop(planner, crew["researcher"].proof(planner)), "invalid_scope", "consent")
    flow.advance(planner, crew["researcher"], scope="openid read")


def test_consent_that_never_granted_the_scope_is_not_fresh(flow, alice, crew, client):
    """A consent step counts only for the scopes the person granted at it."""
    policy(fresh_consent={"email": {"hops": 1}})
    root, _ = flow.authorize(alice, scope="openid email read")
    url, _ = consent_url(flow.app, root, scope="openid read")  # alice drops email here
    client.force_login(alice)
    consented = consent_landing(client.post(url, consent_form(url)))["code"]
    refused(flow.hop(consented, crew["planner"].proof(consented), scope="openid read email"), "invalid_scope", "email")


# --- depth and fan-out ---------------------------------------------------------------------


def test_client_fan_out_and_depth_override_the_settings(flow, alice, crew, app, chain_settings):
    chain_settings(MAX_CHILDREN=3, MAX_DEPTH=16)
    policy(app, max_children=1, max_depth=2)
    root, _ = flow.authorize(alice)
    planner, _, _ = flow.advance(root, crew["planner"])
    refused(flow.hop(root, crew["writer"].proof(root)), "invalid_grant", "fan-out limit")
    research, _, _ = flow.advance(planner, crew["researcher"])
    before = counts()
    refused(flow.hop(research, crew["critic"].proof(research)), "invalid_grant", "depth limit")
    assert counts() == before


def test_the_default_policy_limits_apply_to_a_client_without_one(flow, alice, crew, chain_settings):
    chain_settings(MAX_CHILDREN=1)
    policy(max_children=2)  # looser than the setting: the policy wins
    root, _ = flow.authorize(alice)
    flow.advance(root, crew["planner"])
    flow.advance(root, crew["writer"])
    refused(flow.hop(root, crew["critic"].proof(root)), "invalid_grant", "fan-out limit")


def test_a_consent_step_respects_the_policy_depth(flow, alice, crew, app, client):
    policy(app, max_depth=1)
    root, _ = flow.authorize(alice)
    planner, _, _ = flow.advance(root, crew["planner"])
    url, _ = consent_url(flow.app, planner)
    client.force_login(alice)
    before = counts()
    query = consent_landing(client.post(url, consent_form(url)), error="invalid_request")
    assert "depth limit" in query["error_description"]
    assert counts() == before


# --- may_act --------------------------------------------------------------------------------


def test_introspection_names_who_may_act_next(flow, alice, crew):
    policy(edges=["person -> planner", "planner -> researcher", "planner -> group:research", "researcher -> critic"])
    root, _ = flow.authorize(alice)
    planner, planner_verifier, _ = flow.advance(root, crew["planner"])
    research, research_verifier, _ = flow.advance(planner, crew["researcher"])

    info = flow.introspect(flow.exchange(research, research_verifier).json()["access_token"])
    assert info["may_act"] == {"sub": "critic"}  # RFC 8693 §4.4: one party
    assert info["chain_may_act"] == [{"sub": "critic"}]

    info = flow.introspect(flow.exchange(planner, planner_verifier).json()["access_token"])
    assert "may_act" not in info  # several parties: only the extension list
    assert info["chain_may_act"] == [{"sub": "researcher"}, {"sub": "writer"}]


def test_may_act_names_only_agents_that_can_act_for_this_client(flow, alice, crew, make_agent, make_app):
    """The default policy may name another client's agent, or a disabled one: neither can
    take this client's chain, and naming it would tell this client of another's agents."""
    make_agent("outsider", applications=[make_app("other-client")])
    crew["critic"].model.is_active = False
    crew["critic"].model.save()
    policy(edges=["person -> planner", "planner -> outsider", "planner -> critic", "planner -> writer"])
    root, _ = flow.authorize(alice)
    planner, verifier, _ = flow.advance(root, crew["planner"])
    info = flow.introspect(flow.exchange(planner, verifier).json()["access_token"])
    assert info["chain_may_act"] == [{"sub": "writer"}] and info["may_act"] == {"sub": "writer"}


def test_may_act_is_absent_when_anyone_may_act_next(flow, alice, crew):
    policy(edges=["person -> planner", "planner -> *"])
    root, _ = flow.authorize(alice)
    planner, verifier, _ = flow.advance(root, crew["planner"])
    info = flow.introspect(flow.exchange(planner, verifier).json()["access_token"])
    assert "may_act" not in info and "chain_may_act" not in info


def test_no_one_may_act_next_is_an_empty_list(flow, alice, crew):
    policy(edges=["person -> planner"])
    root, _ = flow.authorize(alice)
    planner, verifier, _ = flow.advance(root, crew["planner"])
    info = flow.introspect(flow.exchange(planner, verifier).json()["access_token"])
    assert info["chain_may_act"] == [] and "may_act" not in info


# --- the record -----------------------------------------------------------------------------


def test_the_decision_is_signed_and_verified(flow, alice, crew):
    policy(edges=["person -> planner"], fresh_consent={"email": {"hops": 2}})
    root, _ = flow.authorize(alice, scope="openid email")
    code, _, _ = flow.advance(root, crew["planner"])
    step = lifecycle.find_step(code)
    assert step.hash_version == integrity.LINK_HASH_VERSION == 5
    out = io.StringIO()
    call_command("chain_grant_verify", str(step.root_id), stdout=out)
    assert "0 problem(s)" in out.getvalue()

    ChainedGrant.objects.filter(pk=step.pk).update(policy_decision={"policy": "default", "edge": "* -> planner"})
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("chain_grant_verify", str(step.root_id), stdout=out)
    assert "link_hash" in out.getvalue() or "link hash" in out.getvalue()


def test_steps_written_at_version_4_still_verify(flow, alice, crew, monkeypatch):
    """Steps written before migration 0012 (link hash version 4, no policy_decision)
    verify beside later ones; a version-5 step cannot be passed off as version 4."""
    from chain_grant.core import tree

    monkeypatch.setattr(tree, "LINK_HASH_VERSION", 4)
    root, _ = flow.authorize(alice)
    old, _, _ = flow.advance(root, crew["planner"])
    assert lifecycle.find_step(old).hash_version == 4
    monkeypatch.undo()
    policy(edges=["* -> researcher"])
    new, _, _ = flow.advance(old, crew["researcher"])
    step = lifecycle.find_step(new)
    assert step.hash_version == 5 and step.policy_decision["edge"] == "* -> researcher"
    assert integrity.verify_chain(step.root_id).ok

    ChainedGrant.objects.filter(pk=step.pk).update(hash_version=4)
    result = integrity.verify_chain(step.root_id)
    assert not result.ok and result.first_bad_step == step.pk


@pytest.mark.parametrize(
    "edit",
    [
        {"edges": "planner -> writer"},
        {"edges": ["planner writer"]},
        {"fresh_consent": {"email": {"hops": "1"}}},
        {"fresh_consent": {"email": {"minutes": 10**30}}},  # timedelta() would raise OverflowError
    ],
)
def test_a_policy_edited_past_validation_fails_closed(flow, alice, crew, edit):
    """A row written straight to the database with a bad shape refuses hops (an OAuth
    error, never a 500) and lets no one act next."""
    root, _ = flow.authorize(alice, scope="openid email")
    code, verifier, _ = flow.advance(root, crew["planner"])
    HandoffPolicy.objects.create(**edit)
    before = counts()
    refused(flow.hop(code, crew["writer"].proof(code)), "invalid_grant", "malformed")
    assert counts() == before
    info = flow.introspect(flow.exchange(code, verifier).json()["access_token"])
    assert info["active"] and info["chain_may_act"] == []


# --- validation, export and import ----------------------------------------------------------


@pytest.mark.parametrize(
    "document, fragment",
    [
        ({"edges": ["planner -> nobody"]}, "unknown agent"),
        ({"edges": ["group:nogroup -> planner"]}, "unknown agent group"),
        ({"edges": ["planner researcher"]}, "from -> to"),
        ({"edges": "planner -> researcher"}, "a list"),
        ({"fresh_consent": {"nosuchscope": {"hops": 1}}}, "unknown scope"),
        ({"fresh_consent": {"email": {"hops": -1}}}, "hops"),
        ({"fresh_consent": {"email": {}}}, "hops or minutes"),
        ({"fresh_consent": {"email": {"hops": True}}}, "hops"),
        ({"max_depth": "3"}, "max_depth"),
        ({"max_children": 0}, "max_children"),
        ({"max_depth": 10**30}, "max_depth"),  # no database column holds it
        ({"max_children": 2**31}, "max_children"),  # PostgreSQL's integer
        ({"fresh_consent": {"email": {"minutes": 10**30}}}, "minutes"),  # no timedelta holds it
        ({"fresh_consent": {"email": {"hops": 2**31}}}, "hops"),
        ({"colour": "blue"}, "unknown key"),
    ],
)
def test_bad_policies_are_refused(crew, document, fragment):
    with pytest.raises(handoff.PolicyError) as error:
        handoff.save_policy(None, document)
    assert fragment in str(error.value)
    assert not HandoffPolicy.objects.exists()


def test_export_and_import_round_trip(crew, app, tmp_path):
    policy(edges=["person -> planner", "planner -> group:research"], max_depth=4)
    policy(app, fresh_consent={"email": {"hops": 1, "minutes": 30}}, max_children=2)
    out = io.StringIO()
    call_command("chain_grant_policy", "export", stdout=out)
    exported = json.loads(out.getvalue())
    assert exported["chain_grant_policy"] == 1
    assert [p["client_id"] for p in exported["policies"]] == [None, app.client_id]

    HandoffPolicy.objects.all().delete()
    path = tmp_path / "p.json"
    path.write_text(out.getvalue())
    call_command("chain_grant_policy", "import", str(path), stdout=io.StringIO())
    again = io.StringIO()
    call_command("chain_grant_policy", "export", stdout=again)
    assert json.loads(again.getvalue()) == exported

    one = io.StringIO()
    call_command("chain_grant_policy", "export", app.client_id, stdout=one)
    assert [p["client_id"] for p in json.loads(one.getvalue())["policies"]] == [app.client_id]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("not json", "not JSON"),
        ('{"policies": []}', "chain_grant_policy"),
        ('{"chain_grant_policy": 1, "policies": [{"client_id": "no-such-client"}]}', "no-such-client"),
        (
            '{"chain_grant_policy": 1, "policies": [{"client_id": null, "max_depth": 3},'
            ' {"client_id": "chain-client", "edges": ["planner -> ghost"]}]}',
            "ghost",
        ),
        ('{"chain_grant_policy": 1, "policies": [{"client_id": null}, {"client_id": null}]}', "twice"),
        ('{"chain_grant_policy": 1, "policies": [{"client_id": ["chain-client"]}]}', "client_id"),
        # PostgreSQL refuses a NUL in a query (a DataError and a traceback, not an error naming it)
        ('{"chain_grant_policy": 1, "policies": [{"client_id": "chain-\\u0000client"}]}', "client_id"),
        ('{"chain_grant_policy": 1, "policies": [[]]}', "JSON object"),
        ('{"chain_grant_policy": 1, "policies": {"client_id": null}}', "a list"),
        ('{"chain_grant_policy": 1, "policies": [{"client_id": null, "edges": [1]}]}', "from -> to"),
        (
            '{"chain_grant_policy": 1, "policies": [{"client_id": null, "fresh_consent": {"email": {"hops": 1.5}}}]}',
            "hops",
        ),
        ("[]", "Not a policy export"),
    ],
)
def test_import_of_bad_json_is_refused_and_changes_nothing(crew, app, tmp_path, text, fragment):
    policy(max_depth=9)
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(CommandError) as error:
        call_command("chain_grant_policy", "import", str(path), stdout=io.StringIO())
    assert fragment in str(error.value)
    assert list(HandoffPolicy.objects.values_list("application", "max_depth")) == [(None, 9)]


def policy_form(app, edges, fresh_consent, max_depth=""):
    from chain_grant.review.admin import HandoffPolicyForm

    fields = {"edges": json.dumps(edges), "fresh_consent": json.dumps(fresh_consent), "max_depth": max_depth}
    return HandoffPolicyForm(data={"application": app.pk, "max_children": "", **fields})


def test_the_admin_form_refuses_unknown_agents_and_scopes(crew, app):
    form = policy_form(app, ["planner -> ghost"], {"nosuch": {"hops": 1}})
    assert not form.is_valid()
    assert "ghost" in str(form.errors["edges"])
    assert "nosuch" in str(form.errors["fresh_consent"])

    good = policy_form(app, ["person -> planner"], {"email": {"hops": 1}}, max_depth="3")
    assert good.is_valid(), good.errors
    good.save()
    assert HandoffPolicy.objects.get(application=app).edges == ["person -> planner"]
    assert not policy_form(app, [], {}).is_valid()  # one policy per client
    policy(edges=[])
    default_again = policy_form(app, [], {})
    default_again.data["application"] = ""
    assert not default_again.is_valid() and "already has a hand-off policy" in str(default_again.errors)


def test_the_admin_lists_policies(admin_client, crew, app):
    policy(app, edges=["person -> planner"])
    response = admin_client.get("/admin/chain_grant/handoffpolicy/")
    assert response.status_code == 200
    assert app.client_id in response.content.decode()


def test_import_reads_stdin_and_keeps_policies_it_does_not_name(crew, app, monkeypatch):
    policy(app, max_depth=3)
    document = {"chain_grant_policy": 1, "policies": [{"client_id": None, "edges": ["* -> planner"]}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(document)))
    out = io.StringIO()
    call_command("chain_grant_policy", "import", "-", stdout=out)
    assert "Imported 1 policy." in out.getvalue()
    assert dict(HandoffPolicy.objects.values_list("application", "max_depth")) == {None: None, app.pk: 3}
