"""idp_project's answers resource (/api/answers/): only the writer, with a person's
consent within one hop (scope email), publishes an answer, and the actor chain is read
from the token and stored with it. Every other token is refused as RFC 6750 says, the
unmet requirement named in ``WWW-Authenticate``."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant
from idp_project.models import Answer
from tests.helpers import bearer, chain_token, make_token

URL = "/api/answers/"


@pytest.fixture
def agents(make_agent):
    return {name: make_agent(name, scopes="openid email read") for name in ("planner", "critic", "writer")}


@pytest.fixture
def chained(flow, alice, agents):
    """alice (openid email read) → planner → alice consents (openid email) → writer; the
    writer's code is exchanged."""
    token = chain_token(flow, alice, agents, ["planner", "user", "writer"])
    step = ChainedGrant.objects.get(agent__identifier="writer")
    return {"token": token, "step": step, "chain_id": str(step.root_id)}


def post(client, token):
    return client.post(URL, {"text": "x"}, content_type="application/json", **bearer(token))


def assert_refused(response, status, error, description):
    assert response.status_code == status, response.content
    assert response.json() == {"error": error, "error_description": description}
    assert response["WWW-Authenticate"] == f'Bearer error="{error}", error_description="{description}"'
    assert not Answer.objects.exists()


def test_a_chain_token_publishes_an_answer_with_its_actor_chain(client, chained, alice):
    response = client.post(
        URL, {"text": "The final answer."}, content_type="application/json", **bearer(chained["token"])
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["text"] == "The final answer." and body["user"] == "alice" and body["client_id"] == "chain-client"
    assert body["chain_id"] == chained["chain_id"] == str(chained["step"].root_id)
    assert body["step_id"] == str(chained["step"].pk) and body["chain_depth"] == 3
    assert [(a["kind"], a["actor"]) for a in body["actors"]] == [
        ("user", "alice"),
        ("agent", "planner"),
        ("user", "alice"),
        ("agent", "writer"),
    ]
    assert body["actors"][-1]["scope"] == "openid email"
    assert body["act"] == {"sub": "writer", "act": {"sub": str(alice.pk), "act": {"sub": "planner"}}}
    answer = Answer.objects.get(pk=body["id"])
    assert answer.user == alice and str(answer.chain_id) == chained["chain_id"] and answer.act == body["act"]
    assert chained["token"] not in response.content.decode()


def test_the_owner_token_and_staff_read_an_answer_others_do_not(client, chained, app, db):
    created = client.post(URL, {"text": "hello"}, content_type="application/json", **bearer(chained["token"]))
    detail = f"{URL}{created.json()['id']}/"
    assert client.get(detail, **bearer(chained["token"])).json()["text"] == "hello"
    bob = get_user_model().objects.create_user("bob", "bob@example.com", "pw")
    assert client.get(detail, **bearer(make_token(bob, app, "email"))).status_code == 404
    assert Client().get(detail).status_code == 401
    staff = Client()
    staff.force_login(get_user_model().objects.create_user("auditor", "a@example.com", "pw", is_staff=True))
    assert staff.get(detail).json()["chain_id"] == chained["chain_id"]
    assert staff.post(URL, {"text": "x"}, content_type="application/json").status_code == 403  # sessions only read


def test_a_token_not_issued_from_a_chain_is_refused(client, alice, app):
    response = post(client, make_token(alice, app, "email"))
    assert_refused(response, 403, "insufficient_scope", "requires a token issued from an authorization code chain")


REFUSED = {
    "another actor": (["planner", "user", "critic"], {}, "requires the actor writer"),
    "no person one hop up": (["planner", "writer"], {}, "requires a person's step within 1 hop"),
    "no email": (["writer"], {"root_scope": "openid read"}, "requires the scope email"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_each_unmet_requirement_is_refused_naming_it(client, flow, alice, agents, case):
    """Only the writer, with a person's consent within one hop and scope email."""
    line, scopes, description = REFUSED[case]
    response = post(client, chain_token(flow, alice, agents, line, **scopes))
    assert_refused(response, 403, "insufficient_scope", description)


def test_no_token_or_a_revoked_chain_is_401(client, chained):
    assert client.post(URL, {"text": "x"}, content_type="application/json").status_code == 401
    lifecycle.revoke_subtree(ChainedGrant.objects.get(pk=chained["chain_id"]), "test")
    response = post(client, chained["token"])
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert not Answer.objects.exists()


def test_a_revoked_step_whose_token_survived_is_401(client, chained):
    """Revocation deletes the tokens; a step marked revoked some other way still refuses."""
    ChainedGrant.objects.filter(pk=chained["step"].pk).update(revoked_at=chained["step"].created)
    response = post(client, chained["token"])
    description = "The chain step of this token was revoked."
    assert_refused(response, 401, "invalid_token", description)


@pytest.mark.parametrize("body", [{}, {"text": ""}, {"text": "x" * 20_001}])
def test_a_bad_body_is_400(client, chained, body):
    response = client.post(URL, body, content_type="application/json", **bearer(chained["token"]))
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert not Answer.objects.exists()
