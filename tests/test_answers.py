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
from tests.helpers import bearer, make_token, user_step

URL = "/api/answers/"


def token_of(flow, code, verifier) -> str:
    response = flow.exchange(code, verifier)
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


@pytest.fixture
def chained(flow, alice, make_agent):
    """alice (openid read) → planner → alice consents (openid email) → writer; the
    writer's code is exchanged."""
    planner = make_agent("planner", scopes="openid email read")
    writer = make_agent("writer", scopes="openid email")
    root, _ = flow.authorize(alice, scope="openid read")
    planner_code, _, _ = flow.advance(root, planner)
    consent, _ = user_step(flow, alice, planner_code, scope="openid email")
    writer_code, verifier, hop = flow.advance(consent, writer)
    step = ChainedGrant.objects.get(agent__identifier="writer")
    return {"token": token_of(flow, writer_code, verifier), "step": step, "chain_id": hop["chain_id"]}


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


def test_another_actor_is_refused(client, flow, alice, make_agent):
    """alice consents (openid email) → critic: a person's step one hop up, but not the writer."""
    critic = make_agent("critic", scopes="openid email")
    root, _ = flow.authorize(alice, scope="openid email")
    code, verifier, _ = flow.advance(root, critic)
    assert_refused(post(client, token_of(flow, code, verifier)), 403, "insufficient_scope", "requires the actor writer")


def test_the_writer_without_a_persons_step_one_hop_up_is_refused(client, flow, alice, make_agent):
    """alice consents (openid email) → planner → writer: alice's step is two hops up."""
    planner = make_agent("planner", scopes="openid email")
    writer = make_agent("writer", scopes="openid email")
    root, _ = flow.authorize(alice, scope="openid email")
    code, _, _ = flow.advance(root, planner)
    code, verifier, _ = flow.advance(code, writer)
    response = post(client, token_of(flow, code, verifier))
    assert_refused(response, 403, "insufficient_scope", "requires a person's step within 1 hop")


def test_a_chain_token_without_the_email_scope_is_refused(client, flow, alice, make_agent):
    writer = make_agent("writer", scopes="openid read")
    root, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root, writer)
    assert_refused(post(client, token_of(flow, code, verifier)), 403, "insufficient_scope", "requires the scope email")


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
