"""Schemathesis over the review API's own OpenAPI schema (drf-spectacular's, served at
/api/schema/), run in-process against idp_project's WSGI application: every
operation with generated parameters and bodies, as a staff auditor (a bearer token
with chains:read and chains:revoke) and anonymously. Check: ``not_a_server_error``.

Bounded: SCHEMATHESIS_EXAMPLES (default 25) examples per operation, no deadline."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.utils import timezone
from hypothesis import HealthCheck, settings
from oauth2_provider.models import get_access_token_model, set_token_value
from schemathesis.checks import not_a_server_error

from tests.wsgi_client import keep_test_connection

pytestmark = pytest.mark.django_db


def load_schema():
    """The schema as idp_project serves it (a request to the WSGI application; drf-spectacular
    reads no database). Loaded at collection: schemathesis' lazy from_fixture() fails on
    pytest 9 (it reads the removed ``Node._nodeid``)."""
    from idp_project.wsgi import application

    with keep_test_connection():
        return schemathesis.openapi.from_wsgi("/api/schema/", application)


schema = load_schema()


@pytest.fixture
def staff_bearer(app, flow, alice, planner) -> dict:
    # A chain to find, verify, export and revoke steps of (ids are generated, but the
    # list and its filters then have rows to serialize).
    flow.advance(flow.authorize(alice, scope="openid read write")[0], planner)
    staff = get_user_model().objects.create_user("auditor", "a@example.com", "pw", is_staff=True)
    staff.user_permissions.add(*staff.user_permissions.model.objects.filter(codename="revoke_chainedgrant"))
    raw = secrets.token_urlsafe(30)
    token = get_access_token_model()(
        user=staff, application=app, scope="chains:read chains:revoke", expires=timezone.now() + timedelta(hours=1)
    )
    set_token_value(token, raw)
    token.save()
    return {"Authorization": f"Bearer {raw}"}


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_is_never_a_server_error(case, staff_bearer):
    for headers in (staff_bearer, {}):  # as the auditor, and anonymously
        with keep_test_connection():
            response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error])
