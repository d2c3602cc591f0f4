"""Exchange once, with the code's own PKCE verifier; a replay, at the token endpoint or
as a hop's parent, is denied and revokes every token issued from that step and its
descendants (RFC 6749 §4.1.2, RFC 9700 §4.2.4). (Revocation itself:
tests/test_revocation.py; an exchange racing a hop: tests/test_concurrency.py.)"""

import pytest

from chain_grant import signals
from chain_grant.core import codes, lifecycle
from chain_grant.models import ChainedGrant
from tests.helpers import assert_no_live_step_below, error_of

pytestmark = pytest.mark.django_db


def test_replay_is_refused_and_revokes_the_subtree_tokens(flow, exchanged_tree):
    received = []
    signals.replay_detected.connect(lambda sender, step, **kw: received.append(step.subject), weak=False)
    code, verifier, _ = exchanged_tree.researcher
    replay = flow.exchange(code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert received == ["researcher"]

    assert flow.introspect(exchanged_tree.tokens["researcher"]["access_token"])["active"] is False
    assert flow.introspect(exchanged_tree.tokens["merger"]["access_token"])["active"] is False  # descendant
    assert flow.introspect(exchanged_tree.tokens["security"]["access_token"])["active"] is True  # sibling untouched
    refresh = flow.refresh(exchanged_tree.tokens["merger"]["refresh_token"])
    assert refresh.json()["error"] == "invalid_grant"

    step = lifecycle.find_step(code)
    assert step.revoked_at and step.revoked_reason == "authorization code replay"
    assert ChainedGrant.objects.get(code_digest=codes.code_digest(exchanged_tree.merger[0])).revoked_at


def test_replay_revokes_tokens_minted_by_refreshing(flow, exchanged_tree):
    first = exchanged_tree.tokens["security"]
    refreshed = flow.refresh(first["refresh_token"]).json()
    assert flow.introspect(refreshed["access_token"])["active"] is True
    code, verifier, _ = exchanged_tree.security
    assert flow.exchange(code, verifier).json()["error"] == "invalid_grant"
    assert flow.introspect(refreshed["access_token"])["active"] is False


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
    assert error_of(loser) == (400, "invalid_grant")
    assert flow.introspect(winner["access_token"])["active"] is False


def test_chained_code_needs_its_own_pkce_verifier(flow, alice, planner):
    root_code, root_verifier = flow.authorize(alice)
    code, _, _ = flow.advance(root_code, planner)
    response = flow.exchange(code, root_verifier)
    assert error_of(response) == (400, "invalid_grant")
    assert ChainedGrant.objects.get(depth=1).exchanged_at is None  # a failed exchange does not burn the code


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
        assert tokens.status_code == 200 and flow.is_active(tokens)

        response = flow.hop(code, researcher.proof(code))
        assert error_of(response) == (400, "invalid_grant")
        step = lifecycle.find_step(code)
        assert replayed == [step.pk]
        assert step.revoked_reason == "authorization code replay"
        assert not flow.is_active(tokens)
        assert error_of(flow.refresh(tokens.json()["refresh_token"])) == (400, "invalid_grant")
        assert_no_live_step_below(step)
        assert not ChainedGrant.objects.filter(agent=researcher.model).exists()
    finally:
        signals.replay_detected.disconnect(dispatch_uid="test-hop-replay")
