"""Introspection shows a token's chain (``chain_id``, ``chain_depth``, ``act``,
``chain_actors``) only to the token's own client and to designated resource servers;
any other authenticated client sees DOT's answer, unchanged."""

import secrets
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, set_token_value

from tests.helpers import SECRET, basic_auth


@pytest.fixture
def chained_token(flow, alice, planner):
    root, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root, planner)
    return flow.exchange(code, verifier).json()["access_token"]


def introspect_as(client, app, token):
    return client.post(
        "/oauth/introspect/", {"token": token}, HTTP_AUTHORIZATION=basic_auth(app.client_id, SECRET)
    ).json()


def test_the_tokens_own_client_sees_the_chain(flow, chained_token):
    data = flow.introspect(chained_token)
    assert data["active"] and data["chain_depth"] == 1 and data["act"] == {"sub": "planner"}


def test_chain_actors_lists_each_step_with_its_kind(flow, chained_token, alice):
    data = flow.introspect(chained_token)
    assert data["chain_actors"] == [{"sub": str(alice.pk), "kind": "user"}, {"sub": "planner", "kind": "agent"}]


def test_another_client_sees_only_dots_answer(client, make_app, chained_token):
    other = make_app("other-client", enabled=False)
    data = introspect_as(client, other, chained_token)
    assert data["active"] is True and data["username"] == "alice"
    assert not {"act", "chain_id", "chain_depth", "chain_actors"} & set(data)


def test_a_designated_resource_server_sees_the_chain(client, make_app, chained_token, settings):
    rs = make_app("notes-rs", enabled=False)
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "INTROSPECTION_RESOURCE_SERVERS": ["notes-rs"]}
    data = introspect_as(client, rs, chained_token)
    assert data["act"] == {"sub": "planner"}


def test_a_bearer_token_with_the_introspection_scope_counts_as_its_client(client, make_app, alice, chained_token):
    rs = make_app("bearer-rs", enabled=False)
    raw = secrets.token_urlsafe(30)
    token = get_access_token_model()(
        user=alice, application=rs, scope="introspection", expires=timezone.now() + timedelta(minutes=5)
    )
    set_token_value(token, raw)
    token.save()
    data = client.post("/oauth/introspect/", {"token": chained_token}, HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert data["active"] is True and "act" not in data and "chain_actors" not in data


def test_a_plain_token_costs_one_statement_on_chain_grant_tables(flow, alice):
    """One indexed statement decides that a plain bearer token has no chain and no DPoP
    binding; DOT's answer then goes out unchanged (no step lookups, no refresh family).
    (The client's ChainClient row is client authentication's, as at every endpoint.)"""
    code, verifier = flow.authorize(alice, scope="openid read")
    token = flow.exchange(code, verifier).json()["access_token"]
    with CaptureQueriesContext(connection) as queries:
        data = flow.introspect(token)
    assert data["active"] is True and not {"act", "chain_id", "cnf"} & set(data)
    chain_tables = [
        q["sql"]
        for q in queries.captured_queries
        if "chain_grant_" in q["sql"] and 'FROM "chain_grant_chainclient"' not in q["sql"]
    ]
    assert len(chain_tables) == 1 and "EXISTS" in chain_tables[0]
