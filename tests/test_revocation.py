"""Revoking a step revokes its subtree: steps, DOT grants, access and refresh tokens
(a refresh token too, even if its own row escaped), in constant queries; nothing above
the revoked step changes. (A hop racing a revocation: tests/test_concurrency.py.)"""

from hashlib import sha256

import pytest
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant
from tests.factories import build_chain
from tests.helpers import error_of

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


def test_revoked_codes_cannot_be_chained_or_exchanged(flow, alice, make_agent):
    planner, researcher = make_agent("planner"), make_agent("researcher", scopes="read")
    root_code, _ = flow.authorize(alice)
    p_code, p_verifier, _ = flow.advance(root_code, planner)
    r_code, r_verifier, _ = flow.advance(p_code, researcher)
    assert lifecycle.revoke_subtree(lifecycle.find_step(p_code), "admin") == 2
    assert flow.hop(p_code, researcher.proof(p_code)).json()["error"] == "invalid_grant"
    assert flow.exchange(r_code, r_verifier).json()["error"] == "invalid_grant"
    assert flow.exchange(p_code, p_verifier).json()["error"] == "invalid_grant"
    assert lifecycle.find_step(root_code).revoked_at is None  # above the revoked step: untouched


def test_revoke_subtree_deletes_dot_grants_and_tokens(exchanged_tree):
    planner = lifecycle.find_step(exchanged_tree.planner[0])
    live_grants = get_grant_model().objects.count()
    assert lifecycle.revoke_subtree(planner, "admin") == 4
    assert get_grant_model().objects.count() == live_grants - 1  # only planner's code was still live
    assert not AccessToken.objects.filter(user__username="alice").exists()
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert lifecycle.revoke_subtree(planner, "again") == 0  # idempotent


@pytest.mark.parametrize("size", [10, 300])
def test_revoke_subtree_query_count_does_not_grow(size, app, alice, django_assert_max_num_queries):
    root = build_chain(app, alice, size)
    with django_assert_max_num_queries(12):
        assert lifecycle.revoke_subtree(root, "bulk") == size


def test_refresh_token_of_a_revoked_step_is_refused(flow, alice, planner):
    """Rule: a refresh token issued from a revoked step is dead even if its own row is
    still live (a rotation that raced the revocation): invalid_grant."""
    root_code, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root_code, planner)
    tokens = flow.exchange(code, verifier).json()
    rotated = flow.refresh(tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.content  # live step: refreshing works

    step = lifecycle.find_step(code)
    ChainedGrant.objects.filter(pk=step.pk).update(revoked_at=timezone.now(), revoked_reason="raced rotation")
    row = RefreshToken.objects.get(token_checksum=sha256(rotated.json()["refresh_token"].encode()).hexdigest())
    assert row.revoked is None and row.token_family == step.token_family
    assert error_of(flow.refresh(rotated.json()["refresh_token"])) == (400, "invalid_grant")
    assert RefreshToken.objects.filter(token_family=step.token_family).count() == 2  # nothing new minted
