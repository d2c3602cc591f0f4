"""Joins (fan-in): one hop that combines several branches of a chain.

A ``code_chain`` hop may name more parents in ``joined_codes``; the proof names each by
``joined_c_hashes``. The join step records every parent (its link_hash covers theirs),
its scope is within all of them, revoking or replaying any parent revokes it, and
introspection of a token from below it lists every input (``chain_joins``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_application_model

from chain_grant.client import pkce_pair
from chain_grant.core import integrity, lifecycle
from chain_grant.models import ChainedGrant, ChainJoin
from chain_grant.review import evidence
from tests.helpers import Flow

pytestmark = pytest.mark.django_db


class Branches:
    """alice → planner → (researcher, security, implementer): three live branch codes."""

    def __init__(self, flow, alice, make_agent, app=None):
        self.flow = flow
        self.agents = {
            "planner": make_agent("planner", applications=[app] if app else None),
            "researcher": make_agent("researcher", scopes="openid read write", applications=[app] if app else None),
            "security": make_agent("security", scopes="read write", applications=[app] if app else None),
            "implementer": make_agent("implementer", scopes="openid read write", applications=[app] if app else None),
            "merger": make_agent("merger", scopes="openid read write", applications=[app] if app else None),
        }
        self.root_code, _ = flow.authorize(alice, scope="openid read write")
        self.planner, self.planner_verifier, _ = flow.advance(self.root_code, self.agents["planner"])
        self.code, self.verifier = {}, {}
        for name in ("researcher", "security", "implementer"):
            self.code[name], self.verifier[name], _ = flow.advance(self.planner, self.agents[name])

    def step(self, name) -> ChainedGrant:
        return lifecycle.find_step(self.code[name])

    def join(self, primary="researcher", others=("security", "implementer"), *, proof_codes=None, **extra):
        """The merger's join hop: ``primary``'s code plus ``others``' codes."""
        codes = [self.code.get(o, o) for o in others]
        primary_code = self.code.get(primary, primary)
        proof = self.agents["merger"].proof(
            primary_code, aud=self.flow.issuer, joined_codes=codes if proof_codes is None else proof_codes
        )
        return self.flow.hop(primary_code, proof, joined_codes=" ".join(codes), **extra)


@pytest.fixture
def branches(flow, alice, make_agent):
    return Branches(flow, alice, make_agent)


def error_of(response):
    assert response.status_code == 400, response.content
    return response.json()["error"], response.json().get("error_description", "")


def test_a_join_is_one_step_with_every_parent(branches):
    response = branches.join()
    assert response.status_code == 200, response.content
    merger = lifecycle.find_step(response.json()["authorization_code"])
    parents = [branches.step(n) for n in ("researcher", "security", "implementer")]
    assert merger.parent_id == parents[0].pk
    assert merger.joined == [{"step": str(p.pk), "link_hash": p.link_hash} for p in parents[1:]]
    rows = ChainJoin.objects.filter(step=merger).order_by("position")
    assert [(j.parent_id, j.position) for j in rows] == [(parents[1].pk, 1), (parents[2].pk, 2)]
    assert merger.depth == 3
    assert merger.scope == "read write"  # security has no openid: the intersection of every parent
    assert all(p.children_count == 1 for p in ChainedGrant.objects.filter(pk__in=[p.pk for p in parents]))
    assert integrity.verify_chain(merger.root_id).ok


def test_the_join_hash_covers_every_parent(branches):
    merger = lifecycle.find_step(branches.join().json()["authorization_code"])
    security = branches.step("security")
    ChainedGrant.objects.filter(pk=security.pk).update(scope="read write admin")
    verification = integrity.verify_chain(merger.root_id)
    assert not verification.ok
    assert str(security.pk) in {p["step"] for p in verification.problems}


def test_the_tree_shows_the_join_once_with_its_joined_parents(branches):
    merger = lifecycle.find_step(branches.join().json()["authorization_code"])
    data = evidence.chain_data(evidence.chain_view(merger.root_id))
    steps = {s["id"]: s for s in data["steps"]}
    assert [s["actor"] for s in data["steps"]].count("merger") == 1
    assert steps[str(merger.pk)]["joined"] == [str(branches.step("security").pk), str(branches.step("implementer").pk)]
    assert steps[str(merger.pk)]["parent"] == str(branches.step("researcher").pk)


def test_below_a_join_act_follows_the_primary_and_chain_joins_lists_every_input(branches, make_agent):
    merger_code = branches.join().json()["authorization_code"]
    critic = make_agent("critic", scopes="read write")
    critic_code, verifier, _ = branches.flow.advance(merger_code, critic)
    token = branches.flow.exchange(critic_code, verifier).json()["access_token"]
    seen = branches.flow.introspect(token)
    assert seen["act"] == {
        "sub": "critic",
        "act": {"sub": "merger", "act": {"sub": "researcher", "act": {"sub": "planner"}}},
    }
    assert seen["chain_joins"] == [
        {
            "sub": "merger",
            "joined": [
                {"sub": "security", "act": {"sub": "planner"}},
                {"sub": "implementer", "act": {"sub": "planner"}},
            ],
        }
    ]


def test_a_token_without_a_join_has_no_chain_joins(branches):
    token = branches.flow.exchange(branches.code["security"], branches.verifier["security"]).json()["access_token"]
    assert "chain_joins" not in branches.flow.introspect(token)


# --- the rules, each refused with nothing written ------------------------------------------


def refused(branches, response, error, words):
    before = ChainedGrant.objects.count()
    got, description = error_of(response)
    assert got == error, description
    assert words in description, description
    assert ChainedGrant.objects.count() == before
    assert not ChainJoin.objects.exists()


def test_a_joined_code_that_is_unknown_is_refused(branches):
    refused(branches, branches.join(others=("security", "x" * 43)), "invalid_grant", "joined code")


def test_a_joined_code_from_another_chain_is_refused(branches, alice):
    other, _ = branches.flow.authorize(alice, scope="openid read write")
    other_planner, _, _ = branches.flow.advance(other, branches.agents["planner"])
    refused(branches, branches.join(others=("security", other_planner)), "invalid_grant", "another chain")


def test_a_joined_code_of_another_client_is_refused(branches, make_app, alice, make_agent):
    other_app = make_app("other-client")
    other_flow = Flow(Client(), other_app)
    other_root, _ = other_flow.authorize(alice, scope="openid read write")
    planner = make_agent("planner-2", applications=[other_app])
    other_code, _, _ = other_flow.advance(other_root, planner)
    refused(branches, branches.join(others=("security", other_code)), "invalid_grant", "joined code")


def test_a_joined_code_acting_for_another_person_is_refused(branches, bob):
    ChainedGrant.objects.filter(pk=branches.step("security").pk).update(user=bob)
    refused(branches, branches.join(), "invalid_grant", "another person")


def test_a_joined_code_named_twice_is_refused(branches):
    refused(branches, branches.join(others=("security", "security")), "invalid_request", "twice")


def test_the_primary_code_repeated_in_joined_codes_is_refused(branches):
    refused(branches, branches.join(others=("security", "researcher")), "invalid_request", "repeats")


def test_more_joins_than_max_joins_is_refused(branches, chain_settings):
    chain_settings(MAX_JOINS=1)
    refused(branches, branches.join(), "invalid_request", "MAX_JOINS")
    assert branches.join(others=("security",)).status_code == 200


def test_a_joined_parents_fan_out_limit_applies(branches, chain_settings):
    chain_settings(MAX_CHILDREN=1)
    extra = branches.agents["merger"]
    branches.flow.advance(branches.code["implementer"], extra)  # implementer's one child
    refused(branches, branches.join(), "invalid_grant", "fan-out")


def test_an_expired_joined_code_is_refused(branches):
    ChainedGrant.objects.filter(pk=branches.step("implementer").pk).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    refused(branches, branches.join(), "invalid_grant", "joined code")


def test_a_revoked_joined_code_is_refused(branches):
    lifecycle.revoke_subtree(branches.step("implementer"), "test")
    refused(branches, branches.join(), "invalid_grant", "revoked")


def test_an_exchanged_joined_code_is_a_replay_and_revokes_its_subtree(branches):
    token = branches.flow.exchange(branches.code["security"], branches.verifier["security"])
    assert token.status_code == 200
    got, _ = error_of(branches.join())
    assert got == "invalid_grant"
    assert branches.step("security").revoked_reason == "authorization code replay"
    assert not branches.flow.is_active(token)
    assert not ChainJoin.objects.exists()


def test_a_proof_without_joined_c_hashes_is_refused(branches):
    refused(branches, branches.join(proof_codes=[]), "invalid_grant", "joined_c_hashes")


def test_joined_c_hashes_in_another_order_is_refused(branches):
    swapped = [branches.code["implementer"], branches.code["security"]]
    refused(branches, branches.join(proof_codes=swapped), "invalid_grant", "joined_c_hashes")


def test_joined_c_hashes_without_joined_codes_is_refused(branches):
    code = branches.code["researcher"]
    proof = branches.agents["merger"].proof(code, aud=branches.flow.issuer, joined_codes=[branches.code["security"]])
    refused(branches, branches.flow.hop(code, proof), "invalid_grant", "joined_c_hashes")


def test_a_join_asking_beyond_a_parents_scope_is_refused(branches):
    got, _ = error_of(branches.join(scope="openid read"))  # security has no openid
    assert got == "invalid_scope"


def test_a_public_client_must_give_each_joined_codes_verifier(make_app, alice, make_agent):
    public = make_app("public-app", client_type=get_application_model().CLIENT_PUBLIC, client_secret="")
    owner = Flow(Client(), public)
    agent = make_agent("solo", applications=[public])

    def hop(code, verifier, joined=(), **extra):
        """A public client's hop from ``code``; returns (response, the new code's verifier)."""
        new_verifier, challenge = pkce_pair()
        data = {
            "grant_type": "code_chain",
            "client_id": public.client_id,
            "authorization_code": code,
            "id_token": agent.proof(code, aud=owner.issuer, joined_codes=list(joined)),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "code_verifier": verifier,
            **({"joined_codes": " ".join(joined)} if joined else {}),
            **extra,
        }
        return Client().post("/oauth/token/", data), new_verifier

    root, root_verifier = owner.authorize(alice, scope="openid read")
    first, first_verifier = hop(root, root_verifier)
    parent = first.json()["authorization_code"]
    (a, a_verifier), (b, b_verifier) = [hop(parent, first_verifier) for _ in range(2)]
    a, b = a.json()["authorization_code"], b.json()["authorization_code"]

    missing, _ = hop(a, a_verifier, joined=[b])
    assert error_of(missing) == ("invalid_grant", "code_verifier of the previous code is required for a public client.")
    wrong, _ = hop(a, a_verifier, joined=[b], joined_code_verifiers=a_verifier)
    assert error_of(wrong)[0] == "invalid_grant"
    miscounted, _ = hop(a, a_verifier, joined=[b], joined_code_verifiers=f"{b_verifier} {a_verifier}")
    assert error_of(miscounted)[0] == "invalid_request"
    assert not ChainJoin.objects.exists()
    ok, _ = hop(a, a_verifier, joined=[b], joined_code_verifiers=b_verifier)
    assert ok.status_code == 200, ok.content
    assert ChainJoin.objects.count() == 1


# --- revoking and replaying a parent reaches the join ---------------------------------------


@pytest.mark.parametrize("parent", ["researcher", "security", "implementer", "planner"])
def test_revoking_any_parent_revokes_the_join_and_its_subtree(branches, make_agent, parent):
    merger_code = branches.join().json()["authorization_code"]
    critic_code, verifier, _ = branches.flow.advance(merger_code, make_agent("critic", scopes="read"))
    token = branches.flow.exchange(critic_code, verifier)
    step = lifecycle.find_step(branches.planner) if parent == "planner" else branches.step(parent)
    lifecycle.revoke_subtree(step, "audit")
    assert lifecycle.find_step(merger_code).state == "revoked"
    assert lifecycle.find_step(critic_code).revoked_reason == "audit"
    assert not branches.flow.is_active(token)
    others = {"researcher", "security", "implementer"} - {parent}
    if parent != "planner":
        assert all(branches.step(name).state == "live" for name in others)  # the other branches stand
    assert integrity.verify_chain(step.root_id).ok


def test_replaying_a_joined_parents_code_revokes_the_join(branches):
    merger_code = branches.join().json()["authorization_code"]
    first = branches.flow.exchange(branches.code["security"], branches.verifier["security"])
    assert first.status_code == 200
    again = branches.flow.exchange(branches.code["security"], branches.verifier["security"])
    assert again.status_code == 400
    assert lifecycle.find_step(merger_code).revoked_reason == "authorization code replay"
    assert branches.step("researcher").state == "live"


def test_a_retried_join_gets_the_same_code_but_another_join_does_not(branches):
    code = branches.code["researcher"]
    joined = [branches.code["security"], branches.code["implementer"]]
    proof = branches.agents["merger"].proof(code, aud=branches.flow.issuer, joined_codes=joined)
    challenge = {"code_challenge": pkce_pair()[1], "code_challenge_method": "S256"}
    first = branches.flow.hop(code, proof, joined_codes=" ".join(joined), **challenge)
    again = branches.flow.hop(code, proof, joined_codes=" ".join(joined), **challenge)
    assert first.status_code == again.status_code == 200
    assert first.json()["authorization_code"] == again.json()["authorization_code"]
    assert ChainJoin.objects.count() == 2
