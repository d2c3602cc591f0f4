"""Fixtures for the existing-IdP checks. tests/conftest.py (a parent directory) is
loaded too, so ``alice``, ``app``, ``make_app`` and ``make_agent`` come from there;
tests.helpers' ``Flow`` is written for ``/oauth/``, so here is the same for ``/o/``.

These checks only make sense under ``tests.existing_idp.settings``; the main run
does not collect them (``check_*.py``) and ``tests/test_existing_idp.py`` runs them
in a subprocess with those settings.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.helpers import Flow

from . import validators

PREFIX = "/o"
ISSUER = "http://testserver" + PREFIX
SETTINGS_MODULE = "tests.existing_idp.settings"


@pytest.fixture(autouse=True)
def _existing_idp_settings_only():
    if settings.ROOT_URLCONF != "tests.existing_idp.urls":
        pytest.skip(f"run with --ds={SETTINGS_MODULE} (tests/test_existing_idp.py does)")


@pytest.fixture(autouse=True)
def calls():
    validators.CALLS.clear()
    yield validators.CALLS
    validators.CALLS.clear()


class AcmeFlow(Flow):
    """The shared Flow, for this IdP's endpoints under ``/o/``."""

    def __init__(self, client, app):
        super().__init__(client, app, prefix=PREFIX)

    def introspect(self, token, app=None):
        response = self.client.post(f"{PREFIX}/introspect/", {"token": token}, **self.auth(app))
        assert response.status_code == 200, response.content
        return response.json()

    def userinfo(self, access_token):
        return self.client.get(f"{PREFIX}/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")


@pytest.fixture
def acme(client, app):
    return AcmeFlow(client, app)
