"""link_hash: recomputing it proves nobody edited a step in the database, whatever
JSON the proofs carried (and state changes are not edits)."""

import pytest

from chain_grant.core import codes, integrity, lifecycle
from chain_grant.models import ChainedGrant
from tests.factories import build_chain
from tests.helpers import proof_claims, signed

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
    first = flow.hop(root_code, signed(planner, proof_claims(planner, root_code, **extra)))
    assert first.status_code == 200, first.content
    code = first.json()["authorization_code"]
    second = flow.hop(code, signed(researcher, proof_claims(researcher, code, **extra)))
    assert second.status_code == 200, second.content

    result = integrity.verify_chain(first.json()["chain_id"])
    assert result.ok and result.checked == 3
    stored = ChainedGrant.objects.get(code_digest=codes.code_digest(code)).proof_claims
    assert {k: stored[k] for k in extra} == extra
