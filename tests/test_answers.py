"""idp_project's answers resource (/api/answers/): a chain token (scope email) publishes
an answer, and the actor chain is read from the token and stored with it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant
from idp_project.models import Answer
from tests.helpers import bearer, make_token

URL = "/api/answers/"


@pytest.fixture
def chained(flow, alice, make_agent):
    """alice consents (openid email) → planner → writer; the writer's code is exchanged."""
    planner = make_agent("planner", scopes="openid email read")
    writer = make_agent("writer", scopes="openid email")
    root, _ = flow.authorize(alice, scope="openid email read")
    planner_code, _, hop1 = flow.advance(root, planner)
    writer_code, verifier, hop2 = flow.advance(planner_code, writer)
    response = flow.exchange(writer_code, verifier)
    assert response.status_code == 200, response.content
    step = ChainedGrant.objects.get(agent__identifier="writer")
    return {"token": response.json()["access_token"], "step": step, "chain_id": hop2["chain_id"]}


def test_a_chain_token_publishes_an_answer_with_its_actor_chain(client, chained, alice):
    response = client.post(
        URL, {"text": "The final answer."}, content_type="application/json", **bearer(chained["token"])
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["text"] == "The final answer." and body["user"] == "alice" and body["client_id"] == "chain-client"
    assert body["chain_id"] == chained["chain_id"] == str(chained["step"].root_id)
    assert body["step_id"] == str(chained["step"].pk) and body["chain_depth"] == 2
    assert [(a["kind"], a["actor"]) for a in body["actors"]] == [
        ("user", "alice"),
        ("agent", "planner"),
        ("agent", "writer"),
    ]
    assert body["actors"][-1]["scope"] == "openid email"
    assert body["act"] == {"sub": "writer", "act": {"sub": "planner"}}  # as introspection says
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
    response = client.post(
        URL, {"text": "x"}, content_type="application/json", **bearer(make_token(alice, app, "email"))
    )
    assert response.status_code == 403 and response.json()["error"] == "chain_required"
    assert not Answer.objects.exists()


def test_a_chain_token_without_the_email_scope_is_refused(client, flow, alice, make_agent):
    planner = make_agent("planner", scopes="openid read")
    root, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root, planner)
    token = flow.exchange(code, verifier).json()["access_token"]
    response = client.post(URL, {"text": "x"}, content_type="application/json", **bearer(token))
    assert response.status_code == 403 and response.json()["error"] == "insufficient_scope"
    assert not Answer.objects.exists()


def test_no_token_or_a_revoked_chain_is_401(client, chained):
    assert client.post(URL, {"text": "x"}, content_type="application/json").status_code == 401
    lifecycle.revoke_subtree(ChainedGrant.objects.get(pk=chained["chain_id"]), "test")
    response = client.post(URL, {"text": "x"}, content_type="application/json", **bearer(chained["token"]))
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert not Answer.objects.exists()


@pytest.mark.parametrize("body", [{}, {"text": ""}, {"text": "x" * 20_001}])
def test_a_bad_body_is_400(client, chained, body):
    response = client.post(URL, body, content_type="application/json", **bearer(chained["token"]))
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert not Answer.objects.exists()
