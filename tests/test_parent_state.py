"""ParentState: what a parent's own row does not say (its DOT grant still exists, the
person is active, its resource restriction) is read with it, and the preview that
consent and wallet pages show applies the same rules as the locked hop."""

import pytest
from django.contrib.auth import get_user_model

from chain_grant.core import steps
from chain_grant.core.errors import ChainError
from tests.helpers import REDIRECT_URI


def test_preview_of_an_ordinary_code_refuses_a_disabled_person(flow, alice, app):
    """It used to skip this check for a code not yet chained (no step row)."""
    code, _ = flow.authorize(alice)
    assert steps.preview_parent(app, code)._state.adding  # an unsaved root: nothing written
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    with pytest.raises(ChainError) as refused:
        steps.preview_parent(app, code)
    assert refused.value.error == "invalid_request"
    assert "disabled" in refused.value.description


def test_preview_of_a_chained_code_refuses_a_disabled_person(flow, alice, app, planner):
    root, _ = flow.authorize(alice)
    code, _, _ = flow.advance(root, planner)
    steps.preview_parent(app, code)
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    with pytest.raises(ChainError, match="disabled"):
        steps.preview_parent(app, code)


def test_consent_page_for_a_disabled_persons_code_is_refused(flow, client, alice, app, django_user_model):
    code, _ = flow.authorize(alice)
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    bob = django_user_model.objects.create_user("bob", password="pw")
    client.force_login(bob)
    page = client.get(
        "/oauth/authorize/",
        {
            "client_id": app.client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "email",
            "code": code,
            "state": "s",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        },
    )
    assert page.status_code == 302
    assert "error=invalid_request" in page["Location"] and "disabled" in page["Location"]


def test_check_can_extend_reads_the_state_it_is_given(flow, alice, app, planner):
    root, _ = flow.authorize(alice)
    code, _, _ = flow.advance(root, planner)
    step, state = steps.lock_step(app, *_ids(code))
    assert state.code_live and state.person_active
    with pytest.raises(ChainError, match="unknown, expired"):
        steps.check_can_extend(step, app, steps.ParentState(code_live=False))
    with pytest.raises(ChainError, match="disabled"):
        steps.check_can_extend(step, app, steps.ParentState(person_active=False))


def _ids(code):
    from chain_grant.core.lifecycle import find_step

    step = find_step(code)
    return step.pk, step.root_id
