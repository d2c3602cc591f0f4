"""Without code= (and with response_type=code) chain_grant's authorize endpoint is
DOT's, unchanged (docs/architecture.md): the same pages, redirects and errors as DOT's own
AuthorizationView given the same request, and no ChainedGrant row, ever."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory
from oauth2_provider import views as dot_views

from chain_grant.models import ChainedGrant
from chain_grant.oauth import views as chain_views
from tests import helpers
from tests.helpers import ISSUER, REDIRECT_URI, b64url_decode, consent_url

pytestmark = pytest.mark.django_db


def authorize_params(app, **extra):
    return helpers.authorize_params(app, **{"state": "st-dot", **extra})


def query_of(response) -> dict:
    assert response.status_code == 302, response.content[:300]
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
    return {k: v[0] for k, v in parse_qs(urlparse(response["Location"]).query).items()}


@pytest.fixture(autouse=True)
def no_chain_rows(db):
    yield
    assert not ChainedGrant.objects.exists()


def test_ordinary_code_flow(flow, client, alice):
    params, verifier = authorize_params(flow.app)
    url = "/oauth/authorize/?" + urlencode(params)
    client.force_login(alice)
    page = client.get(url)
    assert page.status_code == 200
    names = [t.name for t in page.templates]
    assert names[0] == "oauth2_provider/authorize.html" and "chain_grant/consent.html" not in names
    query = query_of(client.post(url, {**params, "allow": "Authorize"}))
    assert query["state"] == "st-dot" and query["iss"] == ISSUER
    token = flow.exchange(query["code"], verifier)
    assert token.status_code == 200 and token.json()["scope"] == "openid read"
    assert "act" not in flow.introspect(token.json()["access_token"])


def _claims(jwt: str) -> dict:
    return json.loads(b64url_decode(jwt.split(".")[1]))


def test_oidc_flow_keeps_the_nonce(flow, client, alice):
    params, verifier = authorize_params(flow.app, scope="openid profile", nonce="n-0S6_WzA2Mj")
    url = "/oauth/authorize/?" + urlencode(params)
    client.force_login(alice)
    query = query_of(client.post(url, {**params, "allow": "Authorize"}))
    body = flow.exchange(query["code"], verifier).json()
    claims = _claims(body["id_token"])
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["aud"] == flow.app.client_id
    assert claims["sub"] == str(alice.pk) and claims["iss"] == ISSUER


def test_skip_authorization_approves_at_once(flow, client, alice):
    flow.app.skip_authorization = True
    flow.app.save()
    params, verifier = authorize_params(flow.app)
    client.force_login(alice)
    query = query_of(client.get("/oauth/authorize/?" + urlencode(params)))
    assert query["state"] == "st-dot"
    assert flow.exchange(query["code"], verifier).status_code == 200


@pytest.mark.parametrize("scope", ["read", "openid read"])
def test_prompt_none_unauthenticated_is_login_required(scope, flow, client):
    params, _ = authorize_params(flow.app, scope=scope, prompt="none")
    query = query_of(client.get("/oauth/authorize/?" + urlencode(params)))
    assert query == {"error": "login_required", "state": "st-dot"}


@pytest.mark.parametrize("scope", ["read", "openid read"])
def test_prompt_none_logged_in_is_dots_answer(scope, flow, client, alice):
    """Without code= the endpoint is DOT's: DOT 3.4.1 shows its consent page for
    prompt=none (the differential test below compares the bytes); chain_grant does not
    second-guess it. Silent approvals still work. With code= a chain step answers
    consent_required (tests/test_consent_step.py)."""
    params, verifier = authorize_params(flow.app, scope=scope, prompt="none")
    client.force_login(alice)
    response = client.get("/oauth/authorize/?" + urlencode(params))
    assert response.status_code == 200 and "oauth2_provider/authorize.html" in response.template_name
    flow.app.skip_authorization = True
    flow.app.save()
    query = query_of(client.get("/oauth/authorize/?" + urlencode(params)))
    assert "error" not in query and flow.exchange(query["code"], verifier).status_code == 200


def test_approval_prompt_auto_reuses_a_previous_approval(flow, client, alice):
    code, verifier = flow.authorize(alice, scope="openid read")
    assert flow.exchange(code, verifier).status_code == 200
    params, verifier = authorize_params(flow.app, approval_prompt="auto")
    client.force_login(alice)
    query = query_of(client.get("/oauth/authorize/?" + urlencode(params)))
    assert flow.exchange(query["code"], verifier).status_code == 200
    # a scope not approved before still asks
    params, _ = authorize_params(flow.app, approval_prompt="auto", scope="openid read write")
    assert client.get("/oauth/authorize/?" + urlencode(params)).status_code == 200


def test_invalid_scope_is_an_error_redirect(flow, client, alice):
    params, _ = authorize_params(flow.app, scope="openid teleport")
    client.force_login(alice)
    query = query_of(client.get("/oauth/authorize/?" + urlencode(params)))
    assert query["error"] == "invalid_scope" and query["state"] == "st-dot"


# --- differential: the same request to DOT's own view gives the same answer ---------------------

_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="[^"]*"')


def _summary(response) -> tuple:
    if hasattr(response, "render"):
        response.render()
    location = response.get("Location", "")
    if location:
        parsed = urlparse(location)
        query = [(k, "<code>" if k == "code" else v) for k, v in parse_qs(parsed.query).items()]
        location = (parsed._replace(query="").geturl(), sorted(query))
    template = getattr(response, "template_name", None)
    return response.status_code, location, template, _CSRF.sub("", response.content.decode())


REQUESTS = {
    "consent page": {},
    "OIDC consent page": {"scope": "openid profile", "nonce": "n1"},
    "prompt=login": {"prompt": "login"},
    "prompt=none login": {"prompt": "none login"},
    "prompt=none": {"prompt": "none"},
    "prompt=none OIDC": {"prompt": "none", "scope": "openid read"},
    "invalid scope": {"scope": "read teleport"},
    "no PKCE": {"code_challenge": None, "code_challenge_method": None},
    "plain PKCE": {"code_challenge_method": "plain"},
    "unsupported response_type": {"response_type": "token"},
    "unknown client": {"client_id": "nobody"},
    "unregistered redirect_uri": {"redirect_uri": "https://evil.example/cb"},
    "no client_id": {"client_id": None},
    "duplicate state": {"state": ["a", "b"]},
    "unauthenticated": {"_anonymous": True},
    "unauthenticated prompt=none": {"_anonymous": True, "prompt": "none"},
    "skip_authorization": {"_skip": True},
}


@pytest.mark.parametrize("case", REQUESTS)
def test_same_answer_as_dots_own_view(case, flow, alice):
    extra = dict(REQUESTS[case])
    anonymous, skip = extra.pop("_anonymous", False), extra.pop("_skip", False)
    if skip:
        flow.app.skip_authorization = True
        flow.app.save()
    params, _ = authorize_params(flow.app, **extra)
    url = "/oauth/authorize/?" + urlencode(params, doseq=True)
    answers = []
    for view in (chain_views.AuthorizationView, dot_views.AuthorizationView):
        request = RequestFactory().get(url)
        request.user = AnonymousUser() if anonymous else alice
        request.session = SessionStore()
        answers.append(_summary(view.as_view()(request)))
    assert answers[0] == answers[1]


def test_without_code_dot_keeps_the_resource(flow, client, alice):
    """DOT's own flow (no code=) is untouched: the resource lands on the grant."""
    url, _ = consent_url(flow.app, None, scope="read", resource="https://api.example/")
    client.force_login(alice)
    page = client.get(url)
    assert page.status_code == 200 and 'value="https://api.example/"' in page.content.decode()
    assert not ChainedGrant.objects.exists()
