"""link_hash: recomputing it proves nobody edited a step in the database."""

import pytest

from chain_grant.core import integrity, lifecycle
from chain_grant.models import ChainedGrant
from tests.factories import build_chain

pytestmark = pytest.mark.django_db


def test_untouched_chain_verifies(app, alice):
    root = build_chain(app, alice, 13)
    result = integrity.verify_chain(root.pk)
    assert result.ok and result.checked == 13 and result.first_bad_step is None


def test_edited_scope_is_found_at_the_edited_step(app, alice):
    root = build_chain(app, alice, 13)
    victim = ChainedGrant.objects.get(subject="agent4")
    ChainedGrant.objects.filter(pk=victim.pk).update(scope="read write admin")
    result = integrity.verify_chain(root.pk)
    assert not result.ok and result.first_bad_step == victim.pk


def test_rehashed_edit_is_found_at_the_child(app, alice):
    """Recomputing the edited step's own hash does not help: its children link to the old one."""
    root = build_chain(app, alice, 13)
    victim = ChainedGrant.objects.get(subject="agent1")
    victim.subject = "mallory"
    parent = ChainedGrant.objects.get(pk=victim.parent_id)
    ChainedGrant.objects.filter(pk=victim.pk).update(
        subject="mallory", link_hash=integrity.compute_link_hash(victim, parent.link_hash)
    )
    result = integrity.verify_chain(root.pk)
    assert not result.ok
    assert ChainedGrant.objects.get(pk=result.first_bad_step).parent_id == victim.pk


def test_state_changes_do_not_break_integrity(flow, alice, make_agent):
    """Exchange and revocation are state, not history: they are outside the hash."""
    planner = make_agent("planner")
    root_code, _ = flow.authorize(alice)
    code, verifier, body = flow.advance(root_code, planner)
    assert flow.exchange(code, verifier).status_code == 200
    lifecycle.revoke_subtree(lifecycle.find_step(code), "test")
    assert integrity.verify_chain(body["chain_id"]).ok


def test_unknown_chain_does_not_verify():
    result = integrity.verify_chain("00000000-0000-0000-0000-000000000000")
    assert not result.ok and result.checked == 0
