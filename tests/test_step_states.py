"""One definition of each step state (chain_grant.models.STEP_STATES): the ``state``
property and the querysets of the same names agree, and a step the chain went on
from reads "handed_off" after its code expires, never "expired"."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chain_grant.core import lifecycle, retention
from chain_grant.models import STEP_STATES, ChainedGrant


def assert_one_state_each():
    steps = ChainedGrant.objects.all()
    for step in steps:
        members = [state for state in STEP_STATES if steps.in_state(state).filter(pk=step.pk).exists()]
        assert members == [step.state], (step, members)
    assert set(steps.ended().values_list("pk", flat=True)) == {s.pk for s in steps if s.state != "live"}


def test_every_state_from_real_hops(flow, alice, planner, make_agent):
    researcher = make_agent("researcher", scopes="openid read")
    writer = make_agent("writer", scopes="openid read")
    root_code, _ = flow.authorize(alice)
    planned, _, _ = flow.advance(root_code, planner)  # the root: handed off once expired
    used, used_verifier, _ = flow.advance(planned, researcher)
    unused, _, _ = flow.advance(planned, writer)
    revoked, _, _ = flow.advance(used, writer)
    assert flow.exchange(used, used_verifier).status_code == 200
    lifecycle.revoke_subtree(lifecycle.find_step(revoked), "test")
    assert {s.state for s in ChainedGrant.objects.all()} == {"live", "exchanged", "revoked"}
    assert_one_state_each()

    ChainedGrant.objects.update(expires=timezone.now() - timedelta(seconds=1))
    states = {lifecycle.find_step(c).state for c in (planned, used, unused, revoked)}
    assert states == {"handed_off", "exchanged", "expired", "revoked"}
    assert lifecycle.find_step(planned).state == "handed_off"
    assert lifecycle.find_step(unused).state == "expired"
    assert_one_state_each()

    retention.expire_steps()  # marking keeps the same states
    assert lifecycle.find_step(planned).expired_at is None
    assert lifecycle.find_step(unused).expired_at is not None
    assert_one_state_each()


def test_an_unknown_state_name_is_refused(db):
    with pytest.raises(ValueError):
        ChainedGrant.objects.in_state("gone")


def test_the_admin_filter_and_the_api_offer_exactly_these_states(db):
    from chain_grant.review.admin import StateFilter
    from chain_grant.review.api import StepSerializer

    assert [value for value, _ in StateFilter.lookups(None, None, None)] == list(STEP_STATES)
    assert list(StepSerializer().fields["state"].choices) == list(STEP_STATES)
