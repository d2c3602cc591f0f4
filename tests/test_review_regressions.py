"""Regression tests for the security review's findings, each asserting the fixed
behaviour: hops racing revocations and exchanges, replays through a hop, duplicate
parameters, relaxed (PoC) mode's self-asserted keys, float claims, agent policy on
key addition, refresh after revocation, nbf, and parents whose DOT grant is gone.

The races run on PostgreSQL with real threads (row locks are what make them hold);
the single-connection versions run on both databases."""

from __future__ import annotations

import json
import threading
import time
from hashlib import sha256
from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from jwcrypto import jwk, jws
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.oauth2_validators import OAuth2Validator

from chain_grant import signals
from chain_grant.client import generate_key, pkce_pair, sign_proof
from chain_grant.client.jose import code_hash, did_jwk
from chain_grant.core import agents, codes, integrity, lifecycle, steps
from chain_grant.core.codes import code_digest
from chain_grant.models import Agent, AgentKey, ChainedGrant
from chain_grant.oauth.grant import SINGLE_PARAMS
from chain_grant.validators import ChainOAuth2Validator
from tests.conftest import ISSUER, REDIRECT_URI, Flow

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()
Grant = get_grant_model()
RefreshToken = get_refresh_token_model()
FORM = "application/x-www-form-urlencoded"


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.json().get("error")


def refresh(flow, refresh_token):
    return flow.client.post(
        "/oauth/token", {"grant_type": "refresh_token", "refresh_token": refresh_token}, **flow.auth()
    )


def is_active(flow, token_response) -> bool:
    return flow.introspect(token_response.json()["access_token"])["active"]


def assert_no_live_step_below(step: ChainedGrant) -> None:
    """Nothing under a revoked step can be chained or exchanged any more."""
    subtree = ChainedGrant.objects.subtree_of(step)
    assert not subtree.filter(revoked_at__isnull=True).exists()
    assert not Grant.objects.filter(pk__in=subtree.exclude(grant_id=None).values("grant_id")).exists()
    assert not AccessToken.objects.filter(pk__in=subtree.exclude(access_token=None).values("access_token")).exists()


def assert_not_exchanged_and_live_parent(code: str) -> None:
    """The invariant: a code that was exchanged is marked so on its chain step (replays
    and further hops are caught), and no child was chained from it after that."""
    step = lifecycle.find_step(code)
    if step is None:
        return  # never became a chain step: nothing was chained from it
    assert step.exchanged_at is not None, "exchanged, but its step still looks live"
    assert not step.children.filter(created__gt=step.exchanged_at).exists()


# --- threads (PostgreSQL) ---------------------------------------------------------------


class Paused:
    """Pause one named thread inside a function (inside its transaction) until released."""

    def __init__(self, thread_name: str):
        self.thread_name = thread_name
        self.reached, self.release = threading.Event(), threading.Event()

    def wrap(self, func):
        def paused(*args, **kwargs):
            if threading.current_thread().name != self.thread_name:
                return func(*args, **kwargs)
            result = func(*args, **kwargs)
            self.reached.set()
            assert self.release.wait(20), "never released"
            return result

        return paused


def start(name: str, func, results: dict) -> threading.Thread:
    def run():
        try:
            results[name] = func()
        except Exception as exc:  # the test's assertions report it
            results[name] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def finish(results: dict, *threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), f"{thread.name} did not finish"
        if isinstance(results.get(thread.name), Exception):
            raise AssertionError(f"{thread.name} raised") from results[thread.name]


def blocked(thread: threading.Thread) -> bool:
    """Still running half a second later: waiting on a lock."""
    thread.join(0.5)
    return thread.is_alive()


@pytest.fixture
def agent_chain(app, alice, make_agent):
    """root → planner, with researcher and writer registered. (code, verifier) of planner's step."""
    planner = make_agent("planner")
    researcher, writer = make_agent("researcher"), make_agent("writer")
    flow = Flow(Client(), app)
    root_code, _ = flow.authorize(alice, scope="openid read")
    p_code, p_verifier, _ = flow.advance(root_code, planner)
    return SimpleNamespace(
        flow=flow,
        researcher=researcher,
        writer=writer,
        root_code=root_code,
        code=p_code,
        verifier=p_verifier,
        step=lifecycle.find_step(p_code),
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_revocation_waits_for_an_in_flight_hop_and_revokes_its_child(app, agent_chain, monkeypatch):
    """Rule: revoking a step revokes every child, including one a concurrent hop is
    committing (under READ COMMITTED it used to escape). Hops and revocations take the
    chain root's lock; no token can be had below the revoked step afterwards."""
    c = agent_chain
    pause = Paused("hop")
    monkeypatch.setattr(steps, "attenuate_scope", pause.wrap(steps.attenuate_scope))  # chain locked by now
    results = {}
    hop = start("hop", lambda: Flow(Client(), app).hop(c.code, c.researcher.proof(c.code)), results)
    assert pause.reached.wait(20)
    revoke = start("revoke", lambda: lifecycle.revoke_subtree(ChainedGrant.objects.get(pk=c.step.pk), "admin"), results)
    try:
        assert blocked(revoke), "the revocation did not wait for the hop holding the chain lock"
    finally:
        pause.release.set()
        finish(results, hop, revoke)

    hop_response = results["hop"]
    if hop_response.status_code == 200:  # the hop committed first: its child is revoked with the parent
        child_code = hop_response.json()["authorization_code"]
        assert lifecycle.find_step(child_code).revoked_at is not None
        assert results["revoke"] == 2
        assert error_of(c.flow.hop(child_code, c.writer.proof(child_code))) == (400, "invalid_grant")
        assert error_of(c.flow.exchange(child_code, hop_response.verifier)) == (400, "invalid_grant")
    else:
        assert error_of(hop_response) == (400, "invalid_grant")
    assert error_of(c.flow.exchange(c.code, c.verifier)) == (400, "invalid_grant")
    assert_no_live_step_below(c.step)
    assert not AccessToken.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_hop_waiting_on_a_revocation_is_refused(app, agent_chain, monkeypatch):
    """Rule: a hop that arrives while its parent is being revoked waits for the
    revocation and is then refused (invalid_grant); no child is created."""
    c = agent_chain
    pause = Paused("revoke")
    monkeypatch.setattr(lifecycle, "lock_chain", pause.wrap(lifecycle.lock_chain))
    results = {}
    revoke = start("revoke", lambda: lifecycle.revoke_subtree(ChainedGrant.objects.get(pk=c.step.pk), "admin"), results)
    assert pause.reached.wait(20)
    hop = start("hop", lambda: Flow(Client(), app).hop(c.code, c.researcher.proof(c.code)), results)
    try:
        assert blocked(hop), "the hop did not wait for the revocation holding the chain lock"
    finally:
        pause.release.set()
        finish(results, revoke, hop)

    assert results["revoke"] == 1
    assert error_of(results["hop"]) == (400, "invalid_grant")
    assert not ChainedGrant.objects.filter(parent=c.step).exists()
    assert ChainedGrant.objects.get(pk=c.step.pk).children_count == 0
    assert_no_live_step_below(c.step)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_hop_during_the_exchange_of_a_plain_code_is_refused(app, alice, planner, monkeypatch):
    """Rule: while an ordinary code is being exchanged (token saved, code not yet
    consumed), a hop on it waits for the exchange's row lock and is then refused:
    the code is never both exchanged and a chain parent."""
    flow = Flow(Client(), app)
    code, verifier = flow.authorize(alice, scope="openid read")
    pause = Paused("exchange")  # inside save_bearer_token's transaction, DOT grant row locked
    monkeypatch.setattr(OAuth2Validator, "save_bearer_token", pause.wrap(OAuth2Validator.save_bearer_token))
    results = {}
    exchange = start("exchange", lambda: Flow(Client(), app).exchange(code, verifier), results)
    assert pause.reached.wait(20)
    hop = start("hop", lambda: Flow(Client(), app).hop(code, planner.proof(code)), results)
    try:
        assert blocked(hop), "the hop did not wait for the exchange holding the code's row lock"
    finally:
        pause.release.set()
        finish(results, exchange, hop)

    assert results["exchange"].status_code == 200, results["exchange"].content
    assert error_of(results["hop"]) == (400, "invalid_grant")
    assert lifecycle.find_step(code) is None and not ChainedGrant.objects.exists()
    assert is_active(flow, results["exchange"])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_exchange_during_a_hop_on_a_plain_code_marks_the_root_exchanged(app, alice, planner, monkeypatch):
    """Rule: an exchange that arrives while a hop is chaining the same ordinary code
    waits for it, then marks the new root step exchanged, so a replay of the code is
    detected and revokes the token and the chain below it."""
    flow = Flow(Client(), app)
    code, verifier = flow.authorize(alice, scope="openid read")
    pause = Paused("hop")  # root created, DOT grant row locked
    monkeypatch.setattr(steps, "attenuate_scope", pause.wrap(steps.attenuate_scope))
    results = {}
    hop = start("hop", lambda: Flow(Client(), app).hop(code, planner.proof(code)), results)
    assert pause.reached.wait(20)
    exchange = start("exchange", lambda: Flow(Client(), app).exchange(code, verifier), results)
    try:
        assert blocked(exchange), "the exchange did not wait for the hop holding the code's row lock"
    finally:
        pause.release.set()
        finish(results, hop, exchange)

    assert results["hop"].status_code == 200, results["hop"].content
    assert results["exchange"].status_code == 200, results["exchange"].content
    assert_not_exchanged_and_live_parent(code)
    assert lifecycle.find_step(code).exchanged_at is not None
    assert error_of(flow.exchange(code, verifier)) == (400, "invalid_grant")
    assert not is_active(flow, results["exchange"])
    assert_no_live_step_below(lifecycle.find_step(code))


# --- a plain code exchanged while a hop chains it (single connection, both databases) ----


@pytest.mark.parametrize("hook", ["hop before the exchange locks the code", "hop after the token is saved"])
def test_plain_code_is_never_both_exchanged_and_a_live_parent(hook, flow, alice, planner, monkeypatch):
    """Rule: a hop racing the exchange of an ordinary code either chains it first (and
    the exchange then marks its root step exchanged) or is refused (invalid_grant).
    A replay of the code is refused; if the code had become a chain root, the replay
    also revokes the token and everything chained from it."""
    code, verifier = flow.authorize(alice, scope="openid read")
    hops = []

    def hop_first(method):
        def hooked(self, *args, **kwargs):
            if not hops:
                hops.append(Flow(Client(), flow.app).hop(code, planner.proof(code)))
            return method(self, *args, **kwargs)

        return hooked

    # validate_code runs before save_bearer_token locks the code; oauthlib calls
    # invalidate_authorization_code after the token is saved (where a hop used to
    # find the code still live: the review's window).
    name = "validate_code" if hook.startswith("hop before") else "invalidate_authorization_code"
    monkeypatch.setattr(ChainOAuth2Validator, name, hop_first(getattr(ChainOAuth2Validator, name)))
    exchanged = flow.exchange(code, verifier)
    monkeypatch.undo()

    assert exchanged.status_code == 200, exchanged.content
    [hop] = hops
    assert_not_exchanged_and_live_parent(code)
    replay = flow.exchange(code, verifier)
    assert error_of(replay) == (400, "invalid_grant")
    if hop.status_code == 200:
        root = lifecycle.find_step(code)
        assert root.exchanged_at is not None and root.children_count == 1
        assert not is_active(flow, exchanged)
        assert root.revoked_reason == "authorization code replay"
        assert_no_live_step_below(root)
    else:
        assert error_of(hop) == (400, "invalid_grant")
        assert lifecycle.find_step(code) is None  # nothing was chained from the exchanged code
    assert hop.status_code == (200 if hook.startswith("hop before") else 400)


# --- replays through a hop ----------------------------------------------------------------


@pytest.mark.parametrize("parent", ["agent step", "chain root"])
def test_hop_from_an_exchanged_code_is_refused_and_revokes_its_token(parent, flow, alice, planner, make_agent):
    """Rule: an exchanged code presented as a hop's parent is a replay: invalid_grant,
    and the token issued from it (and everything chained from it) is revoked."""
    researcher = make_agent("researcher", scopes="openid read")
    replayed = []
    signals.replay_detected.connect(
        lambda sender, step, **kw: replayed.append(step.pk), weak=False, dispatch_uid="test-hop-replay"
    )
    try:
        root_code, root_verifier = flow.authorize(alice, scope="openid read")
        p_code, p_verifier, _ = flow.advance(root_code, planner)
        code, verifier = (p_code, p_verifier) if parent == "agent step" else (root_code, root_verifier)
        tokens = flow.exchange(code, verifier)
        assert tokens.status_code == 200 and is_active(flow, tokens)

        response = flow.hop(code, researcher.proof(code))
        assert error_of(response) == (400, "invalid_grant")
        step = lifecycle.find_step(code)
        assert replayed == [step.pk]
        assert step.revoked_reason == "authorization code replay"
        assert not is_active(flow, tokens)
        assert error_of(refresh(flow, tokens.json()["refresh_token"])) == (400, "invalid_grant")
        assert_no_live_step_below(step)
        assert not ChainedGrant.objects.filter(agent=researcher.model).exists()
    finally:
        signals.replay_detected.disconnect(dispatch_uid="test-hop-replay")


# --- duplicate parameters ---------------------------------------------------------------------


@pytest.mark.parametrize("param", SINGLE_PARAMS)
def test_duplicate_parameters_are_invalid_request(param, flow, alice, planner):
    """Rule (RFC 6749 §3.1): a code_chain parameter sent twice is invalid_request, not
    silently "last value wins"; nothing is chained."""
    code, verifier = flow.authorize(alice, scope="openid read")
    fields = {
        "grant_type": "code_chain",
        "client_id": flow.app.client_id,
        "authorization_code": code,
        "id_token": planner.proof(code),
        "scope": "openid read",
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
        "code_verifier": verifier,
    }
    other = {
        "authorization_code": "bogus",
        "id_token": planner.proof(code),
        "scope": "openid",
        "code_challenge": pkce_pair()[1],
    }.get(param, fields[param])  # same value is a duplicate too
    body = "&".join(f"{k}={v}" for k, v in [(param, other), *fields.items()])  # the real value comes last
    response = flow.client.post("/oauth/token", body, content_type=FORM, **flow.auth())
    assert error_of(response) == (400, "invalid_request")
    assert param in response.json()["error_description"]
    assert not ChainedGrant.objects.exists()

    single = "&".join(f"{k}={v}" for k, v in fields.items())  # without the duplicate, the same request works
    assert flow.client.post("/oauth/token", single, content_type=FORM, **flow.auth()).status_code == 200


# --- relaxed (PoC) mode -------------------------------------------------------------------


def poc_proof(key, alg="ES256", extra=None) -> str:
    """What the PoC's agents send: the public key in the header, sub = its did:jwk."""
    public = key.export_public(as_dict=True)
    now = int(time.time())
    claims = {"sub": did_jwk(public), "iat": now, "exp": now + 60, **(extra or {})}
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=alg, protected=json.dumps({"alg": alg, "jwk": public}))
    return token.serialize(compact=True)


@pytest.fixture
def relaxed(settings):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "RELAXED_PROOFS": True}


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize(
    ("params", "alg"),
    [
        ({"kty": "RSA", "size": 2048}, "RS512"),
        ({"kty": "RSA", "size": 4096}, "PS256"),
        ({"kty": "EC", "crv": "P-521"}, "ES512"),
    ],
    ids=["RSA-2048", "RSA-4096", "P-521"],
)
def test_relaxed_mode_takes_long_did_jwk_identifiers(params, alg, flow, alice):
    """Rule: a did:jwk of any allowed key (an RSA-4096 one is ~960 characters) is an
    identifier like any other: the hop works on both databases, no 500."""
    key = jwk.JWK.generate(**params)
    code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(code, poc_proof(key, alg))
    assert response.status_code == 200, response.content
    did = did_jwk(key.export_public(as_dict=True))
    agent = Agent.objects.get()
    assert agent.identifier == did and agent.self_asserted
    assert lifecycle.find_step(response.json()["authorization_code"]).subject == did


@pytest.mark.usefixtures("relaxed")
def test_relaxed_mode_refuses_self_asserted_keys_from_public_clients(alice, make_app):
    """Rule: a public client's code plus a freshly made key must not become a token
    without the code's PKCE verifier: self-asserted proofs from public clients are
    invalid_grant, and the rightful holder can still exchange the code."""
    Application = get_application_model()
    public = make_app("public-app", client_type=Application.CLIENT_PUBLIC, client_secret="")
    owner = Flow(Client(), public)
    stolen_code, verifier = owner.authorize(alice, scope="openid read write")
    _, challenge = pkce_pair()
    response = Client().post(
        "/oauth/token",
        {
            "grant_type": "code_chain",
            "client_id": public.client_id,
            "authorization_code": stolen_code,
            "id_token": poc_proof(jwk.JWK.generate(kty="EC", crv="P-256")),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert error_of(response) == (400, "invalid_grant")
    assert not Agent.objects.exists() and not ChainedGrant.objects.exists()

    exchange = Client().post(
        "/oauth/token",
        {
            "grant_type": "authorization_code",
            "client_id": public.client_id,
            "code": stolen_code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert exchange.status_code == 200, exchange.content


@pytest.mark.usefixtures("relaxed")
def test_relaxed_jwk_header_cannot_speak_for_a_registered_agent(flow, alice, app):
    """Rule: a registered agent whose identifier happens to be a did:jwk is not usable
    through the self-asserted path (its registration, keys and policy decide), even
    for a client it is registered for; its registered path still works."""
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    public = key.export_public(as_dict=True)
    agent = agents.register_agent(did_jwk(public), json.dumps(public), [app], "read")
    code, _ = flow.authorize(alice, scope="openid read write")

    response = flow.hop(code, poc_proof(key))
    assert error_of(response) == (400, "invalid_grant")
    agent.refresh_from_db()
    assert not agent.self_asserted and agent.keys.count() == 1
    assert not ChainedGrant.objects.exists()

    registered = flow.hop(code, sign_proof(key, sub=agent.identifier, aud=ISSUER, code=code))
    assert registered.status_code == 200, registered.content
    assert registered.json()["scope"] == "read"  # the registered policy applied


@pytest.mark.usefixtures("relaxed")
def test_relaxed_mode_keeps_a_registered_agents_disabled_key_and_clients(flow, alice, make_app):
    """Rule: relaxed mode does not bring back a disabled key of a registered did:jwk
    agent, nor silently add the calling client to the agent's applications."""
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    public = key.export_public(as_dict=True)
    other_app = make_app("other-app")
    agent = agents.register_agent(did_jwk(public), json.dumps(public), [other_app], "read")
    AgentKey.objects.filter(agent=agent).update(is_active=False)  # key compromised: disabled
    code, _ = flow.authorize(alice, scope="openid read")

    assert error_of(flow.hop(code, poc_proof(key))) == (400, "invalid_grant")
    assert list(agent.applications.all()) == [other_app]
    assert not agent.keys.filter(is_active=True).exists()
    assert not ChainedGrant.objects.exists()


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize("disable", ["key", "agent"])
def test_relaxed_mode_refuses_a_disabled_self_asserted_account(disable, flow, alice):
    """Rule: once an operator disables a self-asserted account's key (or the account),
    proofs with that key are refused; the account is not re-created or re-enabled."""
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    code, _ = flow.authorize(alice, scope="openid read")
    first = flow.hop(code, poc_proof(key))
    assert first.status_code == 200, first.content
    agent = Agent.objects.get()
    agents.disable(agent, kid=agent.keys.get().kid if disable == "key" else None)

    next_code = first.json()["authorization_code"]
    assert error_of(flow.hop(next_code, poc_proof(key))) == (400, "invalid_grant")
    agent.refresh_from_db()
    assert Agent.objects.count() == 1 and agent.keys.count() == 1
    assert (agent.is_active, agent.keys.get().is_active) == ((True, False) if disable == "key" else (False, True))
    assert lifecycle.find_step(next_code).children_count == 0


# --- float claims and integrity -------------------------------------------------------------


def signed_claims(agent, code, **extra) -> str:
    now = int(time.time())
    claims = {
        "sub": agent.identifier,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": f"jti-{time.monotonic_ns()}",
        "c_hash": code_hash(code),
        **extra,
    }
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(agent.key, alg="ES256", protected=json.dumps({"alg": "ES256", "kid": agent.key["kid"]}))
    return token.serialize(compact=True)


@pytest.mark.parametrize(
    "value",
    [-0.0, 1e20, 1.5, 2.0, 1e-7, [1, 0.5], {"nested": 3.0}],
    ids=["-0.0", "1e20", "1.5", "2.0", "1e-7", "in a list", "in an object"],
)
def test_float_claims_are_refused_and_write_nothing(value, flow, alice, planner):
    """Rule: proofs carrying floats are invalid_request (PostgreSQL's jsonb would
    rewrite them, so verify_chain would raise a false alarm); nothing is written."""
    code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(code, signed_claims(planner, code, confidence=value))
    assert error_of(response) == (400, "invalid_request")
    assert not ChainedGrant.objects.exists()
    assert list(Grant.objects.values_list("code", flat=True)) == [code_digest(code)]
    assert Agent.objects.count() == 1 and not planner.model.steps.exists()


def test_verify_chain_holds_for_every_stored_claim_type(flow, alice, planner, make_agent):
    """Rule: whatever JSON a proof may carry (big integers, unicode, nested objects in
    any key order, booleans, null) is stored as signed, so verify_chain is ok on the
    database it was created on (jsonb reorders keys and normalises numbers)."""
    researcher = make_agent("researcher")
    extra = {
        "big": 2**70,
        "negative": -(2**63),
        "zero": 0,
        "text": "é\u2028日本",
        "empty": "",
        "nested": {"z": [1, {"b": True, "a": None}], "a": {"y": False}},
        "list": [3, 2, 1],
    }
    root_code, _ = flow.authorize(alice, scope="openid read")
    first = flow.hop(root_code, signed_claims(planner, root_code, **extra))
    assert first.status_code == 200, first.content
    code = first.json()["authorization_code"]
    second = flow.hop(code, signed_claims(researcher, code, **extra))
    assert second.status_code == 200, second.content

    result = integrity.verify_chain(first.json()["chain_id"])
    assert result.ok and result.checked == 3
    stored = ChainedGrant.objects.get(code_digest=codes.code_digest(code)).proof_claims
    assert {k: stored[k] for k in extra} == extra


# --- agent policy when adding a key -------------------------------------------------------------


def test_adding_a_key_keeps_the_agents_policy(flow, alice, tmp_path):
    """Rule: ``chain_grant_agent add`` for an existing agent without --scopes or
    --algorithms adds the key and keeps allowed_scopes and allowed_algorithms (it used
    to reset them to "everything"); the new key is bound by the same policy."""
    first, second = generate_key("EC"), generate_key("EC")
    for name, key in (("first.jwk", first), ("second.jwk", second)):
        (tmp_path / name).write_text(key.export_public())

    def add(key_file, *options):
        call_command(
            "chain_grant_agent",
            "add",
            "planner",
            "--key",
            str(tmp_path / key_file),
            "--application",
            flow.app.client_id,
            *options,
            stdout=StringIO(),
        )

    add("first.jwk", "--scopes", "openid read", "--algorithms", "ES256")
    add("second.jwk")
    agent = Agent.objects.get(identifier="planner")
    assert agent.allowed_scopes == "openid read"
    assert agent.allowed_algorithms == ["ES256"]
    assert sorted(agent.keys.filter(is_active=True).values_list("kid", flat=True)) == sorted(
        [first.thumbprint(), second.thumbprint()]
    )

    code, _ = flow.authorize(alice, scope="openid read write")
    response = flow.hop(code, sign_proof(second, sub="planner", aud=ISSUER, code=code))
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid read"

    add("second.jwk", "--scopes", "read")  # given explicitly: changed
    agent.refresh_from_db()
    assert (agent.allowed_scopes, agent.allowed_algorithms) == ("read", ["ES256"])


# --- refresh, nbf, deleted grants ----------------------------------------------------------------


def test_refresh_token_of_a_revoked_step_is_refused(flow, alice, planner):
    """Rule: a refresh token issued from a revoked step is dead even if its own row is
    still live (a rotation that raced the revocation): invalid_grant."""
    root_code, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root_code, planner)
    tokens = flow.exchange(code, verifier).json()
    rotated = refresh(flow, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.content  # live step: refreshing works

    step = lifecycle.find_step(code)
    ChainedGrant.objects.filter(pk=step.pk).update(revoked_at=timezone.now(), revoked_reason="raced rotation")
    row = RefreshToken.objects.get(token_checksum=sha256(rotated.json()["refresh_token"].encode()).hexdigest())
    assert row.revoked is None and row.token_family == step.token_family
    assert error_of(refresh(flow, rotated.json()["refresh_token"])) == (400, "invalid_grant")
    assert RefreshToken.objects.filter(token_family=step.token_family).count() == 2  # nothing new minted


@pytest.mark.parametrize(("nbf_offset", "expected"), [(120, 400), (-10, 200), (0, 200)], ids=["future", "past", "now"])
def test_proof_nbf_in_the_future_is_refused(nbf_offset, expected, flow, alice, planner):
    """Rule: a proof is not accepted before its ``nbf`` (beyond the clock skew)."""
    code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(code, planner.proof(code, extra={"nbf": int(time.time()) + nbf_offset}))
    assert response.status_code == expected, response.content
    if expected == 400:
        assert response.json()["error"] == "invalid_grant"
        assert "nbf" in response.json()["error_description"]
        assert not ChainedGrant.objects.exists()


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
