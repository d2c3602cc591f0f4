"""Concurrency. With real threads on PostgreSQL (row locks are what make these hold):
parallel hand-offs respect the fan-out limit, parallel exchanges mint one token,
consents, wallet steps and hops at once respect MAX_CHILDREN, and a hop waits for a
revocation or an exchange of its parent (and the other way round). On both
databases: the same races forced inside one connection.

The threads pause one request inside its transaction (``Paused``) and check that the
other one waits for it; then the invariant: no code is both exchanged and a live
parent, nothing live is left below a revoked step."""

import threading
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_grant_model, get_id_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator

from chain_grant.client.wallet import HeadlessWallet
from chain_grant.core import lifecycle, steps
from chain_grant.models import ChainedGrant
from chain_grant.validators import ChainOAuth2Validator
from tests.factories import run_together
from tests.helpers import (
    SECRET,
    Flow,
    WalletFlow,
    assert_no_live_step_below,
    basic_auth,
    consent_form,
    consent_url,
    error_of,
)

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()
Grant = get_grant_model()
THREADS = 8


# --- parallel requests on one parent (PostgreSQL) ----------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("limit", [1, 3])
def test_parallel_handoffs_respect_max_children(limit, app, alice, make_agent, chain_settings):
    chain_settings(MAX_CHILDREN=limit)
    planner = make_agent("planner")
    workers = [make_agent(f"worker{i}", scopes="read") for i in range(THREADS)]
    flow = Flow(Client(), app)
    root_code, _ = flow.authorize(alice, scope="openid read")
    parent_code, _, _ = flow.advance(root_code, planner)
    proofs = [w.proof(parent_code) for w in workers]

    responses = run_together(lambda proof: Flow(Client(), app).hop(parent_code, proof), [(p,) for p in proofs])

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * limit + [400] * (THREADS - limit)
    assert {r.json()["error"] for r in responses if r.status_code == 400} == {"invalid_grant"}
    parent = lifecycle.find_step(parent_code)
    assert parent.children_count == limit
    assert ChainedGrant.objects.filter(parent=parent).count() == limit


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_exchanges_mint_one_token_and_the_replay_revokes_it(app, alice, make_agent):
    planner = make_agent("planner")
    flow = Flow(Client(), app)
    root_code, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root_code, planner)

    responses = run_together(lambda: Flow(Client(), app).exchange(code, verifier), [()] * THREADS)

    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == 1, [r.content for r in responses]
    assert {r.json()["error"] for r in responses if r.status_code != 200} == {"invalid_grant"}
    # The losers are replays: the one token issued is revoked, and no stray token or id_token is left.
    assert flow.introspect(ok[0].json()["access_token"])["active"] is False
    assert get_access_token_model().objects.count() == 0
    assert get_id_token_model().objects.count() <= 1
    assert lifecycle.find_step(code).revoked_reason == "authorization code replay"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_consents_wallet_steps_and_hops_in_parallel_respect_max_children(app, alice, make_agent, chain_settings):
    """One live parent, MAX_CHILDREN=1, and at once: consent POSTs, wallet completions
    and agent hops. Exactly one child; every DOT grant has its step (no half-written step)."""
    chain_settings(MAX_CHILDREN=1)
    flow = Flow(Client(), app)
    planner = make_agent("planner")
    root, _ = flow.authorize(alice, scope="openid read write")
    parent_code, _, _ = flow.advance(root, planner)
    parent = lifecycle.find_step(parent_code)

    calls = []
    for _ in range(3):  # consent POSTs, each from a logged-in browser that saw the page
        browser = Client()
        browser.force_login(alice)
        url, _ = consent_url(app, parent_code, scope="read")
        assert browser.get(url).status_code == 200
        calls.append((lambda b=browser, u=url: b.post(u, consent_form(u)),))
    for _ in range(3):  # wallet steps, answered and waiting for the browser
        wflow = WalletFlow(Client(), app)
        pending = wflow.start(code=parent_code, scope="read")
        HeadlessWallet.generate().respond(pending.url, post=wflow.post)
        calls.append((lambda p=pending: Client().post(p.path("complete"), {"poll": p.poll}),))
    for i in range(3):  # agent hops
        agent = make_agent(f"helper{i}")
        data = {
            "grant_type": "code_chain",
            "authorization_code": parent_code,
            "id_token": agent.proof(parent_code, aud=flow.issuer),
            "code_challenge": "c" * 43,
            "code_challenge_method": "S256",
        }
        calls.append(
            (lambda d=data: Client().post("/oauth/token", d, HTTP_AUTHORIZATION=basic_auth(app.client_id, SECRET)),)
        )

    responses = run_together(lambda call: call(), calls)

    assert all(r.status_code < 500 for r in responses), [r.status_code for r in responses]
    assert ChainedGrant.objects.filter(parent=parent).count() == 1
    parent.refresh_from_db()
    assert parent.children_count == 1
    assert ChainedGrant.objects.count() == Grant.objects.count() == 3  # root, planner, one child


# --- a hop racing a revocation or an exchange (PostgreSQL threads) ---------------------------


def assert_not_exchanged_and_live_parent(code: str) -> None:
    """The invariant: a code that was exchanged is marked so on its chain step (replays
    and further hops are caught), and no child was chained from it after that."""
    step = lifecycle.find_step(code)
    if step is None:
        return  # never became a chain step: nothing was chained from it
    assert step.exchanged_at is not None, "exchanged, but its step still looks live"
    assert not step.children.filter(created__gt=step.exchanged_at).exists()


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
    assert flow.is_active(results["exchange"])


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
    assert not flow.is_active(results["exchange"])
    assert_no_live_step_below(lifecycle.find_step(code))


# --- the same race inside one connection (both databases) ------------------------------------


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
        assert not flow.is_active(exchanged)
        assert root.revoked_reason == "authorization code replay"
        assert_no_live_step_below(root)
    else:
        assert error_of(hop) == (400, "invalid_grant")
        assert lifecycle.find_step(code) is None  # nothing was chained from the exchanged code
    assert hop.status_code == (200 if hook.startswith("hop before") else 400)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_hops_joins_and_exchanges_keep_the_signed_record_true(app, alice, make_agent, chain_settings):
    """Every hop, join and exchange moves the chain's signed head under the chain lock:
    run many at once and the head, the events and every signature still verify."""
    from chain_grant.core import integrity

    chain_settings(MAX_CHILDREN=THREADS)
    planner = make_agent("planner")
    workers = [make_agent(f"worker{i}", scopes="openid read") for i in range(THREADS)]
    merger = make_agent("merger", scopes="openid read")
    flow = Flow(Client(), app)
    root_code, _ = flow.authorize(alice, scope="openid read")
    parent_code, _, _ = flow.advance(root_code, planner)
    branches = run_together(lambda worker: Flow(Client(), app).advance(parent_code, worker), [(w,) for w in workers])
    codes = [code for code, _, _ in branches]
    # At once: joins of pairs of branches, and exchanges of the other branches.
    pairs = [(codes[i], codes[i + 1]) for i in range(0, THREADS // 2, 2)]
    exchanged = branches[THREADS // 2 :]

    def act(kind, a, b):
        client = Flow(Client(), app)
        if kind == "join":
            return client.hop(a, merger.proof(a, joined_codes=[b]), joined_codes=b)
        return client.exchange(a, b)

    work = [("join", a, b) for a, b in pairs] + [("exchange", code, verifier) for code, verifier, _ in exchanged]
    responses = run_together(act, work)
    assert all(r.status_code == 200 for r in responses), [r.content for r in responses]
    root = lifecycle.find_step(root_code)
    verification = integrity.verify_chain(root.pk)
    assert verification.ok, verification.problems
    assert verification.checked == 2 + THREADS + len(pairs)
