"""Concurrency, on PostgreSQL (row locks are what make these hold): parallel
hand-offs respect the fan-out limit, and parallel exchanges mint one token."""

import pytest
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_id_token_model

from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant
from tests.conftest import Flow
from tests.factories import run_together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
THREADS = 8


@pytest.mark.parametrize("limit", [1, 3])
def test_parallel_handoffs_respect_max_children(limit, app, alice, make_agent, settings):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "MAX_CHILDREN": limit}
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
