"""The resource server's rules (``chain_grant.core.requirements``), without HTTP: a chain
view (the actors root → current with their kinds, the depth, the scopes) against a
``Requirement``. Each kind of requirement has its refusal, and its description names it."""

from __future__ import annotations

import pytest

from chain_grant.core.requirements import Actor, ChainView, Requirement, unmet, view_from_claims

# alice consents at authorize (the root), the planner hops, alice consents again, the writer hops.
WRITER = ChainView(
    actors=(Actor("1", "user"), Actor("planner", "agent"), Actor("1", "user"), Actor("writer", "agent")),
    depth=3,
    scopes=frozenset({"openid", "email"}),
)


def test_a_view_meeting_every_requirement_passes():
    requirement = Requirement(actor="writer", upstream=["planner"], max_depth=3, person_within=1, scopes=["email"])
    assert unmet(WRITER, requirement) is None
    assert unmet(WRITER, Requirement()) is None


@pytest.mark.parametrize(
    ("requirement", "description"),
    [
        (Requirement(actor="critic"), "requires the actor critic"),
        (Requirement(upstream=["critic"]), "requires the actor critic upstream"),
        (Requirement(upstream=["writer"]), "requires the actor writer upstream"),  # the current actor is not upstream
        (Requirement(max_depth=2), "requires a chain depth of at most 2"),
        (Requirement(person_within=0), "requires a person's step within 0 hops"),
        (Requirement(scopes=["email", "write"]), "requires the scope write"),
        (Requirement(scopes=["admin", "write"]), "requires the scopes admin write"),
    ],
)
def test_each_unmet_requirement_is_named(requirement, description):
    assert unmet(WRITER, requirement) == description


def test_a_person_two_hops_up_is_not_within_one():
    view = ChainView(
        actors=(Actor("1", "user"), Actor("planner", "agent"), Actor("writer", "agent")),
        depth=2,
        scopes=frozenset({"email"}),
    )
    assert unmet(view, Requirement(person_within=1)) == "requires a person's step within 1 hop"
    assert unmet(view, Requirement(person_within=2)) is None


def test_a_wallet_step_is_not_a_persons_consent():
    """A wallet key is self-issued: a client running a wallet could add the step itself."""
    view = ChainView(actors=(Actor("did:jwk:x", "wallet"), Actor("writer", "agent")), depth=1, scopes=frozenset())
    assert unmet(view, Requirement(person_within=1)) == "requires a person's step within 1 hop"
    view = ChainView(actors=(Actor("1", "user"), Actor("did:jwk:x", "wallet")), depth=1, scopes=frozenset())
    assert unmet(view, Requirement(person_within=1)) is None


def test_a_joined_input_is_upstream():
    view = ChainView(
        actors=(Actor("1", "user"), Actor("researcher", "agent"), Actor("merger", "agent")),
        depth=2,
        scopes=frozenset(),
        joined=frozenset({"security"}),
    )
    assert unmet(view, Requirement(upstream=["security", "researcher"])) is None


def test_a_token_without_a_chain_meets_only_scope_requirements():
    assert unmet(None, Requirement(actor="writer")) == "requires a token issued from an authorization code chain"
    assert unmet(None, Requirement(max_depth=5)) == "requires a token issued from an authorization code chain"
    assert unmet(None, Requirement(scopes=["email"]), scopes={"email"}) is None
    assert unmet(None, Requirement(scopes=["email"]), scopes=set()) == "requires the scope email"


def test_scopes_are_checked_before_the_chain():
    assert unmet(WRITER, Requirement(actor="critic", scopes=["write"])) == "requires the scope write"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scopes": "email"},  # a string where a list belongs
        {"upstream": "planner"},
        {"max_depth": -1},
        {"person_within": "1"},
        {"max_depth": True},
        {"actor": ""},
        {"scopes": ["email", 3]},
    ],
)
def test_a_requirement_refuses_nonsense(kwargs):
    with pytest.raises(TypeError):
        Requirement(**kwargs)


CLAIMS = {
    "active": True,
    "scope": "openid email",
    "chain_id": "c",
    "chain_depth": 3,
    "act": {"sub": "writer", "act": {"sub": "1", "act": {"sub": "planner"}}},
    "chain_actors": [
        {"sub": "1", "kind": "user"},
        {"sub": "planner", "kind": "agent"},
        {"sub": "1", "kind": "user"},
        {"sub": "writer", "kind": "agent"},
    ],
}


def test_a_view_from_introspection_claims():
    assert view_from_claims(CLAIMS) == WRITER
    assert view_from_claims({"active": True, "scope": "email"}) is None  # no chain


def test_joined_inputs_from_chain_joins():
    claims = {
        **CLAIMS,
        "chain_joins": [
            {"sub": "merger", "joined": [{"sub": "security", "act": {"sub": "planner"}}, {"sub": "implementer"}]}
        ],
    }
    assert view_from_claims(claims).joined == frozenset({"security", "planner", "implementer"})


@pytest.mark.parametrize(
    "broken",
    [
        {"chain_actors": None},
        {"chain_actors": []},
        {"chain_actors": [{"sub": "writer"}]},
        {"chain_actors": [{"sub": 1, "kind": "agent"}]},
        {"chain_actors": "writer"},
        {"chain_depth": "3"},
        {"chain_depth": 7},  # not the line's length
        {"scope": ["email"]},
        {"chain_joins": [{"sub": "m", "joined": [{"act": {}}]}]},
        {"chain_joins": "x"},
    ],
)
def test_a_malformed_chain_is_a_value_error(broken):
    with pytest.raises(ValueError):
        view_from_claims({**CLAIMS, **broken})
