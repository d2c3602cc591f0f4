"""Exchange once; a replay is denied and revokes every token issued from that step
and its descendants (RFC 6749 §4.1.2, RFC 9700 §4.2.4). Revoking a step revokes its
subtree: steps, DOT grants, access and refresh tokens, in constant queries."""

import pytest
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from chain_grant import signals
from chain_grant.core import codes, lifecycle
from chain_grant.models import ChainedGrant
from tests.factories import build_chain

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


@pytest.fixture
def tree(flow, alice, make_agent):
    """root → planner → (researcher → merger, security); every agent code exchanged."""
    planner, researcher = make_agent("planner"), make_agent("researcher", scopes="openid read")
    security, merger = make_agent("security", scopes="read"), make_agent("merger", scopes="openid read")
    root_code, _ = flow.authorize(alice, scope="openid read write")
    t = type("Tree", (), {})()
    t.planner = flow.advance(root_code, planner)
    t.researcher = flow.advance(t.planner[0], researcher)
    t.security = flow.advance(t.planner[0], security)
    t.merger = flow.advance(t.researcher[0], merger)
    t.tokens = {}
    for name in ("researcher", "security", "merger"):
        code, verifier, _ = getattr(t, name)
        response = flow.exchange(code, verifier)
        assert response.status_code == 200
        t.tokens[name] = response.json()
    return t


def test_replay_is_refused_and_revokes_the_subtree_tokens(flow, tree):
    received = []
    signals.replay_detected.connect(lambda sender, step, **kw: received.append(step.subject), weak=False)
    code, verifier, _ = tree.researcher
    replay = flow.exchange(code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert received == ["researcher"]

    assert flow.introspect(tree.tokens["researcher"]["access_token"])["active"] is False
    assert flow.introspect(tree.tokens["merger"]["access_token"])["active"] is False  # descendant
    assert flow.introspect(tree.tokens["security"]["access_token"])["active"] is True  # sibling untouched
    refresh = flow.client.post(
        "/oauth/token",
        {"grant_type": "refresh_token", "refresh_token": tree.tokens["merger"]["refresh_token"]},
        **flow.auth(),
    )
    assert refresh.json()["error"] == "invalid_grant"

    step = lifecycle.find_step(code)
    assert step.revoked_at and step.revoked_reason == "authorization code replay"
    assert ChainedGrant.objects.get(code_digest=codes.code_digest(tree.merger[0])).revoked_at


def test_replay_revokes_tokens_minted_by_refreshing(flow, tree):
    first = tree.tokens["security"]
    refreshed = flow.client.post(
        "/oauth/token", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, **flow.auth()
    ).json()
    assert flow.introspect(refreshed["access_token"])["active"] is True
    code, verifier, _ = tree.security
    assert flow.exchange(code, verifier).json()["error"] == "invalid_grant"
    assert flow.introspect(refreshed["access_token"])["active"] is False


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


def test_revoke_subtree_deletes_dot_grants_and_tokens(tree):
    planner = lifecycle.find_step(tree.planner[0])
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


def test_code_consumed_between_validation_and_pkce_check_is_a_replay(flow, alice, planner, monkeypatch):
    """A parallel exchange may consume the code after validate_code passed; DOT's later
    Grant lookups then find nothing. That loser gets invalid_grant (not a 500), and as a
    replay it revokes the winner's token."""
    from chain_grant.validators import ChainOAuth2Validator

    root_code, _ = flow.authorize(alice)
    code, verifier, _ = flow.advance(root_code, planner)
    winner = flow.exchange(code, verifier).json()  # the other request, already done
    real = ChainOAuth2Validator.validate_code

    def validated_before_the_winner(self, client_id, code_, client, request, *args, **kwargs):
        # As if this request read the Grant just before the winner consumed it.
        step = lifecycle.find_step(code_)
        request.chain_step, request.scopes, request.user = step, step.scope.split(), step.user
        return True

    monkeypatch.setattr(ChainOAuth2Validator, "validate_code", validated_before_the_winner)
    loser = flow.exchange(code, verifier)
    monkeypatch.setattr(ChainOAuth2Validator, "validate_code", real)
    assert (loser.status_code, loser.json()["error"]) == (400, "invalid_grant")
    assert flow.introspect(winner["access_token"])["active"] is False
