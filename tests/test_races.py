"""The races of a replay, a revocation and exchanges in one chain, on PostgreSQL, 100
trials each: every answer is an OAuth answer (never a 500, never "deadlock
detected"), and no token issued from a revoked step survives. They hold because
every path takes locks in one order (docs/architecture.md, "Lock order")."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from oauth2_provider.models import get_access_token_model

from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant
from tests.factories import run_together
from tests.helpers import Flow

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
TRIALS = 100
AccessToken = get_access_token_model()


@pytest.fixture
def agents(make_agent, settings):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "MAX_CHILDREN": 3}
    return make_agent("planner"), [make_agent(f"worker{i}", scopes="openid read") for i in range(3)]


def family(flow, alice, agents, children: int):
    """A root, a planner step under it, and ``children`` workers under the planner:
    (planner code, its verifier, [(child code, verifier)])."""
    planner, workers = agents
    root_code, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root_code, planner)
    kids = [flow.advance(code, worker)[:2] for worker in workers[:children]]
    return code, verifier, kids


def assert_oauth_answers(responses):
    for response in responses:
        assert response.status_code in (200, 400), (response.status_code, response.content)
        if response.status_code == 400:
            assert response.json()["error"] == "invalid_grant", response.content


def test_a_replay_racing_child_exchanges_revokes_every_token(app, alice, agents):
    """Exchange a step, then, all at once: exchange it again (a replay) and exchange
    its two children. Whatever the order, the replay revokes all of it."""
    statuses = []
    for _ in range(TRIALS):
        flow = Flow(Client(), app)
        code, verifier, kids = family(flow, alice, agents, children=2)
        assert flow.exchange(code, verifier).status_code == 200
        calls = [(code, verifier), *kids]
        responses = run_together(lambda c, v: Flow(Client(), app).exchange(c, v), calls)
        assert_oauth_answers(responses)
        assert responses[0].status_code == 400  # the replay
        statuses.append(tuple(r.status_code for r in responses))
        planner_step = lifecycle.find_step(code)
        assert planner_step.revoked_reason == "authorization code replay"
        assert not ChainedGrant.objects.subtree_of(planner_step).filter(revoked_at__isnull=True).exists()
        assert not AccessToken.objects.exists(), "a token issued below the replayed step survived"
    assert len(statuses) == TRIALS


def test_an_api_revocation_racing_child_exchanges_leaves_nothing_live(app, alice, agents, django_user_model):
    """POST /api/steps/<planner>/revoke/ while its three children are exchanged."""
    revoker = django_user_model.objects.create_user("revoker", password="pw", is_staff=True)
    revoker.user_permissions.add(
        Permission.objects.get(codename="revoke_chainedgrant", content_type__app_label="chain_grant")
    )
    for _ in range(TRIALS):
        flow = Flow(Client(), app)
        code, _, kids = family(flow, alice, agents, children=3)
        planner_step = lifecycle.find_step(code)
        api = Client()
        api.force_login(revoker)

        def act(kind, c=None, v=None, api=api, pk=planner_step.pk):
            if kind == "revoke":
                return api.post(f"/api/steps/{pk}/revoke/", {"reason": "race"}, content_type="application/json")
            return Flow(Client(), app).exchange(c, v)

        responses = run_together(act, [("revoke",), *[("exchange", c, v) for c, v in kids]])
        assert responses[0].status_code == 200, responses[0].content
        assert_oauth_answers(responses[1:])
        assert not ChainedGrant.objects.subtree_of(planner_step).filter(revoked_at__isnull=True).exists()
        assert not AccessToken.objects.exists(), "a token issued below the revoked step survived"


def test_exchanged_at_is_taken_after_the_lock_the_exchange_waited_for(app, alice, agents):
    """The recorded order is the real one: an exchange that waits for a hop or a
    revocation holding the chain stamps ``exchanged_at`` after it got the lock."""
    import threading
    import time

    from django.db import connection, transaction
    from django.utils import timezone

    from chain_grant.core.locks import lock_chain

    flow = Flow(Client(), app)
    code, verifier, _ = family(flow, alice, agents, children=0)
    step = lifecycle.find_step(code)
    locked, release = threading.Event(), threading.Event()
    released_at = {}

    def hold_the_chain():
        try:
            with transaction.atomic():
                lock_chain(step.root_id)
                locked.set()
                release.wait(20)
                released_at["t"] = timezone.now()
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_chain)
    holder.start()
    assert locked.wait(20)
    results = {}

    def exchange():
        try:
            results["response"] = Flow(Client(), app).exchange(code, verifier)
        finally:
            connection.close()

    exchanger = threading.Thread(target=exchange)
    exchanger.start()
    time.sleep(0.3)  # let the exchange reach the lock (ordering only: nothing is timed)
    release.set()
    holder.join(30)
    exchanger.join(30)
    assert results["response"].status_code == 200
    assert lifecycle.find_step(code).exchanged_at >= released_at["t"]
