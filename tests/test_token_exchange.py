"""RFC 8693 token exchange onto a chain: a chain step's access token (subject_token) and
a registered agent's JWT (actor_token) give that agent its own access token, a new step
of the same tree; every refusal is the RFC's error code with nothing written."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from chain_grant.client import actor_token, code_chain, exchange_code, generate_key, pkce_pair, sign_proof
from chain_grant.client import token_exchange as sdk_token_exchange
from chain_grant.client.jose import sha256_hex, token_hash
from chain_grant.client.keys import dpop_proof
from chain_grant.core import handoff, lifecycle
from chain_grant.core.token_exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TOKEN_TYPE, REFRESH_TOKEN_TYPE
from chain_grant.models import ChainClient, ChainedGrant
from tests.factories import run_together
from tests.helpers import ISSUER, REDIRECT_URI, SECRET, Flow, assert_error, basic_auth, make_token, signed

pytestmark = pytest.mark.django_db
TOKEN_URL = "http://testserver/oauth/token/"


@pytest.fixture
def coder(make_agent):
    return make_agent("coder", scopes="openid read")


@pytest.fixture
def planner_token(flow, alice, planner):
    """alice → planner (code_chain), the planner's code exchanged: (access token, planner step)."""
    root, _ = flow.authorize(alice, scope="openid read write")
    code, verifier, _ = flow.advance(root, planner)
    response = flow.exchange(code, verifier)
    assert response.status_code == 200, response.content
    return response.json()["access_token"], ChainedGrant.objects.get(kind="agent", subject="planner")


def exchange_data(subject, actor, **extra):
    data = {
        "grant_type": GRANT_TYPE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "actor_token": actor,
        "actor_token_type": JWT_TOKEN_TYPE,
        **extra,
    }
    return {k: v for k, v in data.items() if v is not None}


def post(flow, data, **headers):
    return flow.client.post("/oauth/token/", data, **{**flow.auth(), **headers})


def written():
    return ChainedGrant.objects.count(), get_access_token_model().objects.count()


def test_an_agent_exchanges_a_chain_token_for_its_own_a_step_of_the_same_tree(flow, planner_token, coder):
    subject, parent = planner_token
    response = post(
        flow, exchange_data(subject, actor_token(coder.key, sub="coder", aud=ISSUER, subject_token=subject))
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE and body["token_type"] == "Bearer"
    assert body["scope"] == "openid read" and "refresh_token" not in body
    assert response["Cache-Control"] == "no-store"
    step = ChainedGrant.objects.get(subject="coder")
    assert (step.parent_id, step.root_id, step.depth, step.kind) == (parent.pk, parent.root_id, 2, "agent")
    assert step.state == "exchanged" and step.actor["via"] == "token_exchange"
    assert step.actor["identifier"] == "coder" and step.grant_id is None
    seen = flow.introspect(body["access_token"])
    assert seen["active"] and seen["scope"] == "openid read" and seen["chain_id"] == str(parent.root_id)
    assert seen["act"] == {"sub": "coder", "act": {"sub": "planner"}} and seen["chain_depth"] == 2


def test_both_front_doors_make_one_tree_with_act_at_every_step(flow, alice, planner, coder, make_agent):
    """code_chain, then token exchange twice: one chain, act correct at each token."""
    writer = make_agent("writer", scopes="openid read")
    root, _ = flow.authorize(alice, scope="openid read write")
    code, verifier, _ = flow.advance(root, planner)
    planner_access = flow.exchange(code, verifier).json()["access_token"]
    tokens = {"planner": planner_access}
    subject = planner_access
    for agent in (coder, writer):
        actor = actor_token(agent.key, sub=agent.identifier, aud=ISSUER, subject_token=subject)
        response = post(flow, exchange_data(subject, actor))
        assert response.status_code == 200, response.content
        subject = tokens[agent.identifier] = response.json()["access_token"]
    assert flow.introspect(tokens["planner"])["act"] == {"sub": "planner"}
    assert flow.introspect(tokens["coder"])["act"] == {"sub": "coder", "act": {"sub": "planner"}}
    assert flow.introspect(tokens["writer"])["act"] == {
        "sub": "writer",
        "act": {"sub": "coder", "act": {"sub": "planner"}},
    }
    roots = set(ChainedGrant.objects.values_list("root_id", flat=True))
    assert len(roots) == 1 and ChainedGrant.objects.count() == 4
    call_command("chain_grant_verify", str(roots.pop()))  # the signed record of the whole tree verifies


def test_the_review_api_and_admin_show_the_exchange_steps_in_the_tree(flow, planner_token, coder):
    subject, parent = planner_token
    actor = actor_token(coder.key, sub="coder", aud=ISSUER, subject_token=subject)
    assert post(flow, exchange_data(subject, actor)).status_code == 200
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("auditor", "auditor@example.com", "pw"))
    page = staff.get(reverse("admin:chain_grant_chain_tree", args=[parent.root_id])).content.decode()
    assert "coder" in page and "planner" in page
    tree = json.dumps(staff.get(f"/api/chains/{parent.root_id}/").json())
    assert '"coder"' in tree and '"planner"' in tree and "token_exchange" in tree


# --- refusals: the RFC's code, nothing written ------------------------------------------------


def refused(flow, data, status, error, **headers):
    before = written()
    response = post(flow, data, **headers)
    body = assert_error(response, status, error)
    assert written() == before, "a refused exchange wrote something"
    return body


def fresh_actor(agent, subject, key=None, **claims):
    now = int(time.time())
    payload = {"iss": agent.identifier, "sub": agent.identifier, "aud": ISSUER, "iat": now, "exp": now + 60}
    payload["jti"] = f"jti-{time.perf_counter_ns()}"
    payload["ath"] = token_hash(subject)
    payload.update(claims)
    header = {"kid": agent.key.get("kid")}  # the agent's kid, whatever key signs
    return signed(agent, {k: v for k, v in payload.items() if v is not None}, header, key=key)


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject_token": None},
        {"subject_token_type": None},
        {"subject_token_type": REFRESH_TOKEN_TYPE},
        {"actor_token": None},
        {"actor_token_type": None},
        {"actor_token_type": ACCESS_TOKEN_TYPE},
        {"requested_token_type": REFRESH_TOKEN_TYPE},
        {"subject_token": "not-a-token-at-all"},
    ],
    ids=[
        "no-subject",
        "no-subject-type",
        "refresh-subject-type",
        "no-actor",
        "no-actor-type",
        "actor-not-jwt",
        "wants-refresh",
        "unknown-subject",
    ],
)
def test_a_malformed_or_unknown_request_is_invalid_request(flow, planner_token, coder, overrides):
    subject, _ = planner_token
    data = exchange_data(subject, fresh_actor(coder, subject))
    data.update(overrides)
    refused(flow, {k: v for k, v in data.items() if v is not None}, 400, "invalid_request")


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://elsewhere.example"},
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 3660},
        {"iat": int(time.time()) + 3600},
        {"jti": None},
        {"ath": "A" * 43},
        {"c_hash": "x"},
        {"sub": "nobody", "iss": "nobody"},
    ],
    ids=["wrong-aud", "expired", "iat-future", "no-jti", "wrong-ath", "hop-proof", "unknown-agent"],
)
def test_an_unacceptable_actor_token_is_invalid_request(flow, planner_token, coder, claims):
    subject, _ = planner_token
    refused(flow, exchange_data(subject, fresh_actor(coder, subject, **claims)), 400, "invalid_request")


def test_an_actor_token_signed_by_another_key_is_invalid_request(flow, planner_token, coder):
    subject, _ = planner_token
    forged = fresh_actor(coder, subject, key=generate_key("EC"))
    body = refused(flow, exchange_data(subject, forged), 400, "invalid_request")
    assert "signature" in body["error_description"]


def test_an_actor_tokens_jti_is_single_use(flow, planner_token, coder):
    subject, _ = planner_token
    actor = fresh_actor(coder, subject)
    assert post(flow, exchange_data(subject, actor)).status_code == 200
    refused(flow, exchange_data(subject, actor), 400, "invalid_request")


def test_ath_is_required_by_default_and_checked_when_present_if_the_setting_is_off(
    flow, planner_token, coder, chain_settings
):
    subject, _ = planner_token
    body = refused(flow, exchange_data(subject, fresh_actor(coder, subject, ath=None)), 400, "invalid_request")
    assert "must carry ath" in body["error_description"]
    chain_settings(TOKEN_EXCHANGE_REQUIRE_ATH=False)
    assert post(flow, exchange_data(subject, fresh_actor(coder, subject, ath=None))).status_code == 200
    refused(flow, exchange_data(subject, fresh_actor(coder, subject, ath="A" * 43)), 400, "invalid_request")
    assert post(flow, exchange_data(subject, fresh_actor(coder, subject))).status_code == 200


def test_a_plain_dot_token_is_not_a_chain_token(flow, alice, coder, app):
    plain = make_token(alice, app, "openid read")
    refused(flow, exchange_data(plain, fresh_actor(coder, plain)), 400, "invalid_request")


def test_the_new_token_never_outlives_the_subject_token(flow, planner_token, coder):
    subject, _ = planner_token
    get_access_token_model().objects.update(expires=timezone.now() + timedelta(seconds=100))
    body = post(flow, exchange_data(subject, fresh_actor(coder, subject))).json()
    assert 90 <= body["expires_in"] <= 100
    issued = get_access_token_model().objects.get(token_checksum=sha256_hex(body["access_token"]))
    assert issued.expires <= get_access_token_model().objects.get(token_checksum=sha256_hex(subject)).expires


def test_an_expired_subject_token_is_refused(flow, planner_token, coder):
    subject, _ = planner_token
    get_access_token_model().objects.update(expires=timezone.now() - timedelta(seconds=1))
    refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "invalid_request")


def test_another_clients_subject_token_is_refused(flow, planner_token, coder, make_app):
    subject, _ = planner_token
    other = make_app("other-client")
    coder.model.applications.add(other)
    before = written()
    response = flow.client.post(
        "/oauth/token/", exchange_data(subject, fresh_actor(coder, subject)), **flow.auth(other)
    )
    assert_error(response, 400, "invalid_request")
    assert written() == before


def test_a_revoked_subject_token_is_refused_and_revoking_the_parent_revokes_the_exchange(flow, planner_token, coder):
    subject, parent = planner_token
    response = post(flow, exchange_data(subject, fresh_actor(coder, subject)))
    issued = response.json()["access_token"]
    assert flow.introspect(issued)["active"]
    lifecycle.revoke_subtree(parent)
    assert not flow.introspect(issued)["active"]
    refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "invalid_request")


def test_a_scope_beyond_the_subject_or_the_agent_is_invalid_scope(flow, planner_token, coder):
    subject, _ = planner_token
    refused(flow, exchange_data(subject, fresh_actor(coder, subject), scope="openid write"), 400, "invalid_scope")
    body = post(flow, exchange_data(subject, fresh_actor(coder, subject), scope="read")).json()
    assert body["scope"] == "read"


def test_a_resource_or_audience_the_subject_does_not_allow_is_invalid_target(flow, alice, planner, coder):
    rs = "https://rs.example/api"
    root, _ = flow.authorize(alice, scope="openid read write", resource=rs)
    code, verifier, _ = flow.advance(root, planner)
    subject = flow.exchange(code, verifier).json()["access_token"]
    refused(
        flow,
        exchange_data(subject, fresh_actor(coder, subject), resource="https://other.example/"),
        400,
        "invalid_target",
    )
    refused(flow, exchange_data(subject, fresh_actor(coder, subject), audience="billing"), 400, "invalid_target")
    refused(flow, exchange_data(subject, fresh_actor(coder, subject), resource="not a uri"), 400, "invalid_target")
    body = post(flow, exchange_data(subject, fresh_actor(coder, subject), audience=rs)).json()
    token = get_access_token_model().objects.get(token_checksum=sha256_hex(body["access_token"]))
    assert token.resource == [rs]  # the subject's restriction carries down


@pytest.mark.parametrize(
    "resource",
    ["http://[rs.example/api", "https://rs.example/\x00", "https://rs.example:99999/", "https://u@rs.example/"],
    ids=["bad-ipv6", "nul", "bad-port", "userinfo"],
)
def test_a_resource_no_database_or_parser_takes_is_invalid_target(flow, planner_token, coder, resource):
    """An unrestricted subject token: the resource itself is refused (urlsplit's ValueError
    and PostgreSQL's NUL-less jsonb would each be a 500)."""
    subject, _ = planner_token
    refused(flow, exchange_data(subject, fresh_actor(coder, subject), resource=resource), 400, "invalid_target")


def test_a_client_that_may_not_chain_is_unauthorized_client(flow, planner_token, coder, app):
    subject, _ = planner_token
    ChainClient.objects.filter(application=app).update(code_chain_enabled=False)
    refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "unauthorized_client")


def test_the_fan_out_and_depth_limits_apply(flow, planner_token, coder, chain_settings):
    subject, _ = planner_token
    chain_settings(MAX_CHILDREN=1)
    assert post(flow, exchange_data(subject, fresh_actor(coder, subject))).status_code == 200
    body = refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "invalid_request")
    assert "MAX_CHILDREN" in body["error_description"]
    chain_settings(MAX_CHILDREN=3, MAX_DEPTH=1)
    body = refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "invalid_request")
    assert "MAX_DEPTH" in body["error_description"]


def test_a_repeated_parameter_is_invalid_request(flow, planner_token, coder):
    subject, _ = planner_token
    data = exchange_data(subject, fresh_actor(coder, subject))
    data["subject_token"] = [subject, subject]
    refused(flow, data, 400, "invalid_request")


def test_wrong_client_credentials_are_invalid_client(flow, planner_token, coder):
    subject, _ = planner_token
    before = written()
    response = flow.client.post(
        "/oauth/token/",
        exchange_data(subject, fresh_actor(coder, subject)),
        HTTP_AUTHORIZATION=basic_auth(flow.app.client_id, "wrong"),
    )
    assert_error(response, 401, "invalid_client")
    assert written() == before


# --- DPoP and private_key_jwt, like any grant ---------------------------------------------


def test_a_dpop_bound_subject_needs_its_key_and_the_new_token_is_bound_too(flow, alice, planner, coder):
    key = generate_key("EC")

    def proof():
        return {"HTTP_DPOP": dpop_proof(key, htm="POST", htu=TOKEN_URL)}

    root, _ = flow.authorize(alice, scope="openid read write")
    hop = flow.client.post(
        "/oauth/token/",
        {"grant_type": "code_chain", "authorization_code": root, "id_token": planner.proof(root), **_pkce()},
        **flow.auth(),
        **proof(),
    )
    assert hop.status_code == 200, hop.content
    code = hop.json()["authorization_code"]
    step = ChainedGrant.objects.get(subject="planner")
    assert step.dpop_jkt
    response = flow.client.post(
        "/oauth/token/",
        {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": _VERIFIER},
        **flow.auth(),
        **proof(),
    )
    assert response.status_code == 200, response.content
    subject = response.json()["access_token"]
    refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "invalid_request")
    other = {"HTTP_DPOP": dpop_proof(generate_key("EC"), htm="POST", htu=TOKEN_URL)}
    refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "invalid_request", **other)
    ok = post(flow, exchange_data(subject, fresh_actor(coder, subject)), **proof())
    assert ok.status_code == 200, ok.content
    assert ok.json()["token_type"] == "DPoP"
    assert flow.introspect(ok.json()["access_token"])["cnf"]["jkt"] == step.dpop_jkt


_VERIFIER, _CHALLENGE = pkce_pair()


def _pkce():
    return {"code_challenge": _CHALLENGE, "code_challenge_method": "S256"}


# --- interop: plain HTTP, written from RFC 8693 §2.1 and §2.2 -------------------------------


@pytest.mark.django_db(transaction=True)
def test_plain_http_from_the_rfc_text_and_the_sdk(live_server, alice, planner, coder, app):
    """No maintained Python client library implements RFC 8693 (Authlib 1.9's
    ``authlib.oauth2.rfc8693`` is an empty module): the request below is the RFC's
    §2.1 form, posted with urllib, and the answer read as §2.2.1 says."""
    with urllib.request.urlopen(f"{live_server.url}/oauth/.well-known/openid-configuration", timeout=30) as r:
        meta = json.load(r)
    assert GRANT_TYPE in meta["grant_types_supported"]
    issuer, token_url = meta["issuer"], meta["token_endpoint"]
    flow = Flow(Client(), app)
    root, _ = flow.authorize(alice, scope="openid read write")
    verifier, challenge = pkce_pair()
    proof = sign_proof(planner.key, sub="planner", aud=issuer, code=root)
    hop = code_chain(token_url, app.client_id, SECRET, root, proof, code_challenge=challenge)
    subject = exchange_code(
        token_url, app.client_id, SECRET, hop["authorization_code"], redirect_uri=REDIRECT_URI, code_verifier=verifier
    )["access_token"]
    form = urllib.parse.urlencode(
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": subject,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "actor_token": actor_token(coder.key, sub="coder", aud=issuer, subject_token=subject),
            "actor_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "scope": "read",
        }
    ).encode()
    request = urllib.request.Request(
        token_url,
        form,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": basic_auth(app.client_id, SECRET),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        body = json.load(r)
    assert set(body) >= {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer" and body["scope"] == "read"
    again = sdk_token_exchange(
        token_url,
        app.client_id,
        SECRET,
        subject,
        actor_token(coder.key, sub="coder", aud=issuer, subject_token=subject),
    )
    assert again["issued_token_type"] == ACCESS_TOKEN_TYPE


# --- concurrency (PostgreSQL: row locks are what make these hold) ------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_exchanges_of_one_token_respect_max_children_and_one_actor_token_wins_once(
    app, alice, make_agent, chain_settings
):
    chain_settings(MAX_CHILDREN=2)
    planner = make_agent("planner")
    workers = [make_agent(f"worker{i}", scopes="read") for i in range(6)]
    flow = Flow(Client(), app)
    root, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root, planner)
    subject = flow.exchange(code, verifier).json()["access_token"]
    parent = ChainedGrant.objects.get(subject="planner")

    def exchange(data):
        return Flow(Client(), app).client.post("/oauth/token/", data, **Flow(Client(), app).auth())

    responses = run_together(exchange, [(exchange_data(subject, fresh_actor(w, subject)),) for w in workers])
    assert sorted(r.status_code for r in responses) == [200] * 2 + [400] * 4
    assert {r.json()["error"] for r in responses if r.status_code == 400} == {"invalid_request"}
    parent.refresh_from_db()
    assert parent.children_count == 2 == ChainedGrant.objects.filter(parent=parent).count()
    assert get_access_token_model().objects.count() == 3  # the planner's and the two winners'

    chain_settings(MAX_CHILDREN=8)
    same = exchange_data(subject, fresh_actor(workers[5], subject))  # one actor token, sent 4 times at once
    responses = run_together(exchange, [(same,)] * 4)
    assert sorted(r.status_code for r in responses) == [200] + [400] * 3


# --- the hand-off policy applies to token exchange too ------------------------------------


def test_the_hand_off_policy_governs_token_exchange(flow, planner_token, coder, make_agent):
    subject, parent = planner_token
    critic = make_agent("critic", scopes="openid read")
    handoff.save_policy(None, {"edges": ["person -> planner", "planner -> critic"]})
    body = refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "invalid_request")
    assert "hand-off not allowed by policy" in body["error_description"]  # RFC 8693 §2.2.2: not invalid_grant
    response = post(flow, exchange_data(subject, fresh_actor(critic, subject)))
    assert response.status_code == 200, response.content
    step = ChainedGrant.objects.get(subject="critic")
    assert step.policy_decision["edge"] == "planner -> critic"
    assert flow.introspect(subject)["may_act"] == {"sub": "critic"}  # who may act after the planner
    call_command("chain_grant_verify", str(parent.root_id))  # the decision is in the signed record


def test_stale_consent_refuses_a_token_exchange_with_invalid_scope(flow, alice, planner, coder):
    handoff.save_policy(None, {"fresh_consent": {"read": {"hops": 1}}})
    root, _ = flow.authorize(alice, scope="openid read write")
    code, verifier, _ = flow.advance(root, planner)  # one hop after alice's consent: fresh
    subject = flow.exchange(code, verifier).json()["access_token"]
    body = refused(flow, exchange_data(subject, fresh_actor(coder, subject)), 400, "invalid_scope")
    assert "read" in body["error_description"]
    assert post(flow, exchange_data(subject, fresh_actor(coder, subject), scope="openid")).status_code == 200
