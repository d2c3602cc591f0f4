"""Expiry is enforced at use time: a stale chained code is refused even if no
housekeeping job ever ran."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chain_grant.models import ChainedGrant
from tests.helpers import error_of

pytestmark = pytest.mark.django_db


def test_hop_code_lifetime_is_code_expire_seconds(flow, alice, planner, chain_settings):
    chain_settings(CODE_EXPIRE_SECONDS=120)
    root_code, _ = flow.authorize(alice)
    code, _, body = flow.advance(root_code, planner)
    assert body["expires_in"] == 120
    step = ChainedGrant.objects.get(depth=1)
    assert timedelta(seconds=115) < step.expires - timezone.now() <= timedelta(seconds=120)


def test_expired_chained_code_cannot_be_exchanged(flow, alice, planner):
    root_code, _ = flow.authorize(alice)
    code, verifier, _ = flow.advance(root_code, planner)
    ChainedGrant.objects.filter(depth=1).update(expires=timezone.now() - timedelta(seconds=1))
    response = flow.exchange(code, verifier)
    assert error_of(response) == (400, "invalid_grant")
    assert ChainedGrant.objects.get(depth=1).revoked_at is None  # expiry is not a replay
