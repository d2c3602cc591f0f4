"""The user step (docs/architecture.md, issue 3): authorize with response_type=code and
code=<previous>. The person logs in and consents on a page that shows the chain;
the new code is a ``user`` child. One test per rule, through the real endpoint.
(Without code= the endpoint is DOT's: tests/test_authorize_unchanged.py.)"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.utils import timezone
from oauth2_provider.models import get_grant_model

from chain_grant.core import codes, integrity, lifecycle, steps
from chain_grant.core.codes import code_digest
from chain_grant.models import ChainedGrant
from tests.helpers import REDIRECT_URI, Flow, consent_form, consent_landing, consent_url, counts

pytestmark = pytest.mark.django_db
Grant = get_grant_model()
REFUSED = steps.PREVIOUS_CODE_REFUSED


def consent(client, url, allow=True):
    return client.post(url, consent_form(url, allow))


@pytest.fixture
def chain(flow, alice, planner):
    """alice's code → planner's code (``ctx.code``, the previous code of the user step)."""
    ctx = type("Chain", (), {})()
    ctx.root, _ = flow.authorize(alice, scope="openid read write")
    ctx.code, ctx.verifier, _ = flow.advance(ctx.root, planner)
    ctx.step = lifecycle.find_step(ctx.code)
    return ctx


# --- the previous code must be live and this client's -------------------------------------------


def _expired_step(ctx, **_):
    ChainedGrant.objects.filter(pk=ctx.step.pk).update(expires=timezone.now() - timedelta(seconds=1))
    return ctx.code


def _revoked(ctx, **_):
    lifecycle.revoke_subtree(ctx.step)
    return ctx.code


def _other_clients_code(ctx, flow, alice, make_app, **_):
    other = make_app("other-client")
    return flow.authorize(alice, app=other)[0]


def _other_clients_step(ctx, flow, alice, make_app, make_agent, **_):
    other = make_app("other-client")
    root, _ = flow.authorize(alice, app=other)
    return flow.advance(root, make_agent("helper", applications=[other]), app=other)[0]


def _expired_dot_code(ctx, flow, alice, **_):
    code, _ = flow.authorize(alice)  # never chained: no step yet
    Grant.objects.filter(code=code_digest(code)).update(expires=timezone.now() - timedelta(seconds=1))
    return code


def _max_children(ctx, chain_settings, make_agent, flow, **_):
    chain_settings(MAX_CHILDREN=1)
    flow.advance(ctx.code, make_agent("sibling"))
    return ctx.code


def _max_depth(ctx, chain_settings, **_):
    chain_settings(MAX_DEPTH=1)  # ctx.code is at depth 1
    return ctx.code


PREVIOUS_CODES = {
    "unknown": lambda ctx, **_: "no-such-code",
    "expired step": _expired_step,
    "revoked step": _revoked,
    "another client's DOT code": _other_clients_code,
    "another client's step": _other_clients_step,
    "expired DOT code": _expired_dot_code,
    "MAX_CHILDREN reached": _max_children,
    "MAX_DEPTH reached": _max_depth,
    "empty": lambda ctx, **_: "",
    "NUL byte": lambda ctx, **_: ctx.code[:10] + "\x00" + ctx.code[10:],
    "absurdly long": lambda ctx, **_: "A" * 20000,
    "non-ASCII": lambda ctx, **_: "cödé-✓",
    "control characters": lambda ctx, **_: "\r\n\t" + ctx.code,
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("case", PREVIOUS_CODES)
def test_previous_code_refused(case, method, chain, client, flow, alice, make_app, make_agent, chain_settings):
    code = PREVIOUS_CODES[case](
        chain, flow=flow, alice=alice, make_app=make_app, make_agent=make_agent, chain_settings=chain_settings
    )
    url, _ = consent_url(flow.app, code)
    client.force_login(alice)
    before = counts()
    response = client.get(url) if method == "GET" else consent(client, url)
    query = consent_landing(response, error="invalid_request")
    assert query["error_description"].startswith(REFUSED)
    assert counts() == before
    assert not ChainedGrant.objects.filter(kind="user", depth__gt=0).exists()


@pytest.mark.parametrize("case", ["unknown client_id", "unregistered redirect_uri", "NUL in client_id"])
def test_no_redirect_to_a_client_that_cannot_be_told(case, chain, client, flow, alice):
    url, _ = consent_url(flow.app, chain.code)
    query = parse_qs(urlparse(url).query)
    query.update(
        {
            "unknown client_id": {"client_id": ["nobody"]},
            "unregistered redirect_uri": {"redirect_uri": ["https://evil.example/cb"]},
            "NUL in client_id": {"client_id": ["chain\x00client"]},
        }[case]
    )
    client.force_login(alice)
    response = client.get("/oauth/authorize/?" + urlencode(query, doseq=True))
    assert 400 <= response.status_code < 500, response.status_code
    assert "Location" not in response
    assert counts() == (2, 2)  # the root and planner's step, their grants; nothing new


def test_exchanged_previous_code_at_get_is_refused_without_revocation(chain, client, flow, alice):
    token = flow.exchange(chain.code, chain.verifier).json()["access_token"]
    url, _ = consent_url(flow.app, chain.code)
    client.force_login(alice)
    query = consent_landing(client.get(url), error="invalid_request")
    assert "exchanged" in query["error_description"]
    chain.step.refresh_from_db()
    assert chain.step.revoked_at is None
    assert flow.introspect(token)["active"] is True


def test_previous_code_exchanged_before_consent_is_a_replay(chain, client, flow, alice, make_agent):
    child_code, child_verifier, _ = flow.advance(chain.code, make_agent("sibling"))
    url, _ = consent_url(flow.app, chain.code)
    client.force_login(alice)
    assert client.get(url).status_code == 200  # the page was shown while the code was live
    token = flow.exchange(chain.code, chain.verifier).json()["access_token"]
    child_token = flow.exchange(child_code, child_verifier).json()["access_token"]

    query = consent_landing(consent(client, url), error="invalid_request")
    assert "exchanged" in query["error_description"]
    assert not ChainedGrant.objects.filter(kind="user", depth__gt=0).exists()
    # the replay revoked the step's subtree and the tokens issued from it
    assert set(ChainedGrant.objects.filter(revoked_at__isnull=False).values_list("revoked_reason", flat=True)) == {
        "authorization code replay"
    }
    assert ChainedGrant.objects.filter(revoked_at__isnull=False).count() == 2
    assert flow.introspect(token)["active"] is False
    assert flow.introspect(child_token)["active"] is False


def test_previous_code_revoked_before_consent(chain, client, flow, alice):
    url, _ = consent_url(flow.app, chain.code)
    client.force_login(alice)
    assert client.get(url).status_code == 200
    lifecycle.revoke_subtree(chain.step)
    before = counts()
    query = consent_landing(consent(client, url), error="invalid_request")
    assert "revoked" in query["error_description"]
    assert counts() == before


# --- login, prompt, client ---------------------------------------------------------------------


def test_unauthenticated_goes_to_login_and_keeps_the_request(chain, client, flow):
    url, _ = consent_url(flow.app, chain.code)
    response = client.get(url)
    assert response.status_code == 302
    location = urlparse(response["Location"])
    assert location.path == "/accounts/login/"
    following = parse_qs(urlparse(parse_qs(location.query)["next"][0]).query)
    assert following["code"] == [chain.code]
    assert counts() == (2, 2)


def test_prompt_login_sends_a_logged_in_person_to_login_once(chain, client, flow, alice):
    url, _ = consent_url(flow.app, chain.code, prompt="login")
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 302
    location = urlparse(response["Location"])
    assert location.path == "/accounts/login/"
    next_url = parse_qs(location.query)["next"][0]
    following = parse_qs(urlparse(next_url).query)
    assert "prompt" not in following and following["code"] == [chain.code]
    assert client.get(next_url).status_code == 200  # after logging in: the consent page, not login again
    assert counts() == (2, 2)


@pytest.mark.parametrize("scope", ["email", "openid email"])  # openid: oauthlib's OIDC prompt checks run too
def test_prompt_none_with_a_previous_code_needs_consent(scope, chain, client, flow, alice):
    url, _ = consent_url(flow.app, chain.code, scope=scope, prompt="none")
    client.force_login(alice)
    consent_landing(client.get(url), error="consent_required")
    assert counts() == (2, 2)


@pytest.mark.parametrize("scope", ["email", "openid email"])
def test_prompt_none_unauthenticated_is_login_required(scope, chain, client, flow):
    url, _ = consent_url(flow.app, chain.code, scope=scope, prompt="none")
    response = client.get(url)
    assert response.status_code == 302
    query = parse_qs(urlparse(response["Location"]).query)
    assert response["Location"].startswith(REDIRECT_URI) and query["error"] == ["login_required"]
    assert query["state"] == ["st-user"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_client_not_enabled_for_chains(method, client, alice, make_app):
    plain = make_app("plain-client", enabled=False)
    code, _ = Flow(client, plain).authorize(alice)  # DOT's flow works for it
    url, _ = consent_url(plain, code)
    client.force_login(alice)
    before = counts()
    response = client.get(url) if method == "GET" else consent(client, url)
    consent_landing(response, error="unauthorized_client")
    assert counts() == before == (0, 1)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_duplicate_code_parameters(method, chain, client, flow, alice):
    url, _ = consent_url(flow.app, chain.code)
    url += "&" + urlencode({"code": chain.root})
    client.force_login(alice)
    response = client.get(url) if method == "GET" else consent(client, url)
    query = consent_landing(response, error="invalid_request")
    assert "code" in query["error_description"]
    assert counts() == (2, 2)


# --- the consent page -------------------------------------------------------------------------


def test_consent_page_shows_the_chain_and_marks_new_scopes(chain, client, flow, alice, bob):
    url, _ = consent_url(flow.app, chain.code, scope="read email")
    client.force_login(bob)
    page = client.get(url)
    assert page.status_code == 200
    assert [t.name for t in page.templates][0] == "chain_grant/consent.html"
    html = page.content.decode()
    steps = re.findall(r"<li>(.*?)</li>", html.split('id="chain-steps">')[1].split("</ol>")[0], re.S)
    assert len(steps) == 3  # alice's consent, planner, and "you"
    root = ChainedGrant.objects.get(depth=0)
    for text, (kind, actor, scope, created) in zip(
        steps[:2],
        [
            ("user", "alice", "openid read write", root.created),
            ("agent", "planner", "openid read write", chain.step.created),
        ],
        strict=True,
    ):
        assert f'cg-kind {kind}">{kind}<' in text and actor in text and scope in text
        assert created.strftime("%Y-%m-%d %H:%M:%S") in text
    assert "bob" in steps[2]
    assert "Until now the chain acted for <strong>alice</strong>" in html
    requested = re.findall(r"<li>(.*?)</li>", html.split('id="requested-scopes">')[1].split("</ul>")[0], re.S)
    assert len(requested) == 2
    assert "read" in requested[0] and "new:" not in requested[0]
    assert "email" in requested[1] and "new: the chain did not have this" in requested[1]
    assert counts() == (2, 2)  # showing the page writes nothing


@pytest.mark.parametrize("setup", ["skip_authorization", "approval_prompt=auto with a token"])
def test_consent_is_never_skipped_for_a_chain_step(setup, chain, client, flow, alice):
    extra = {}
    if setup == "skip_authorization":
        flow.app.skip_authorization = True
        flow.app.save()
    else:
        plain_code, verifier = flow.authorize(alice, scope="read email")
        assert flow.exchange(plain_code, verifier).status_code == 200
        extra["approval_prompt"] = "auto"
    url, _ = consent_url(flow.app, chain.code, scope="read email", **extra)
    client.force_login(alice)
    before = counts()
    page = client.get(url)
    assert page.status_code == 200
    assert "chain_grant/consent.html" in [t.name for t in page.templates]
    assert counts() == before
    without_code = url.replace("code=" + chain.code, "code=")
    without_code = "&".join(p for p in without_code.split("&") if p != "code=")
    assert "code=" not in without_code.split("?")[1].replace("code_challenge", "")
    assert client.get(without_code).status_code == 302  # the same request without code= is approved at once


def test_cancel_is_access_denied_and_writes_nothing(chain, client, flow, alice):
    url, _ = consent_url(flow.app, chain.code)
    client.force_login(alice)
    assert client.get(url).status_code == 200
    consent_landing(consent(client, url, allow=False), error="access_denied")
    assert counts() == (2, 2)
    assert ChainedGrant.objects.get(pk=chain.step.pk).children_count == 0


# --- the new step -------------------------------------------------------------------------------


def test_user_step_is_a_child_acting_for_the_consenting_person(chain, client, flow, alice, bob, make_agent):
    url, verifier = consent_url(flow.app, chain.code, scope="email read")  # email: new, granted by bob
    client.force_login(bob)
    assert client.get(url).status_code == 200
    query = consent_landing(consent(client, url))
    code = query["code"]
    step = lifecycle.find_step(code)
    assert (step.kind, step.depth, step.parent_id, step.root_id) == ("user", 2, chain.step.pk, chain.step.root_id)
    assert step.user == bob and step.subject == str(bob.pk)
    assert step.scope == "email read" and step.requested_scope == "email read"
    assert Grant.objects.get(code=code_digest(code)).user == bob
    chain.step.refresh_from_db()
    assert chain.step.children_count == 1
    assert integrity.verify_chain(step.root_id).ok

    # an agent chains from it, for bob, within what bob granted
    writer = make_agent("writer", scopes="openid email read")
    code3, verifier3, body = flow.advance(code, writer)
    assert body["depth"] == 3 and body["scope"] == "email read"
    assert lifecycle.find_step(code3).user == bob

    # the code exchanges once, for exactly its scope
    exchanged = flow.exchange(code, verifier)
    assert exchanged.status_code == 200, exchanged.content
    token = exchanged.json()
    assert token["scope"] == "email read"
    info = flow.introspect(token["access_token"])
    assert info["username"] == "bob" and info["chain_depth"] == 2
    assert info["act"] == {"sub": str(bob.pk), "act": {"sub": "planner"}}
    again = flow.exchange(code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert flow.introspect(token["access_token"])["active"] is False  # the replay revoked it


def test_user_step_on_an_ordinary_dot_code_materialises_the_root(flow, client, alice, bob):
    root_code, root_verifier = flow.authorize(alice, scope="openid read")
    url, _ = consent_url(flow.app, root_code, scope="read")
    client.force_login(bob)
    page = client.get(url)
    assert page.status_code == 200 and "alice" in page.content.decode()
    assert ChainedGrant.objects.count() == 0  # showing the page does not create the root
    code = consent_landing(consent(client, url))["code"]
    root = ChainedGrant.objects.get(depth=0)
    assert (root.kind, root.user, root.subject, root.scope) == ("user", alice, str(alice.pk), "openid read")
    assert root.code_digest == codes.code_digest(root_code)
    step = lifecycle.find_step(code)
    assert (step.parent_id, step.depth, step.user, step.scope) == (root.pk, 1, bob, "read")
    # the root code itself is still exchangeable (once), and marks its step
    assert flow.exchange(root_code, root_verifier).status_code == 200
    root.refresh_from_db()
    assert root.exchanged_at is not None


def test_post_with_a_tampered_redirect_uri_is_not_followed(chain, client, flow, alice):
    url, _ = consent_url(flow.app, chain.code)
    client.force_login(alice)
    response = client.post(url, {**consent_form(url), "redirect_uri": "https://evil.example/cb"})
    assert 400 <= response.status_code < 500 and "Location" not in response
    assert counts() == (2, 2)


def test_pkce_is_required_for_the_new_code(chain, client, flow, alice):
    url, _ = consent_url(flow.app, chain.code, code_challenge=None, code_challenge_method=None)
    client.force_login(alice)
    query = consent_landing(client.get(url), error="invalid_request")
    assert "challenge" in query["error_description"].lower()
    assert counts() == (2, 2)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_resource_indicator_on_the_user_step_is_refused(method, flow, client, alice):
    """Defect (RFC 8707): with code= the consent page dropped ``resource`` (DOT's own page
    keeps it in the form and on the grant), so the new code's token was unrestricted."""
    root_code, _ = flow.authorize(alice, scope="openid read")
    url, _ = consent_url(flow.app, root_code, scope="read", resource="https://api.example/")
    client.force_login(alice)
    before = counts()
    response = client.get(url) if method == "GET" else client.post(url, consent_form(url))
    query = consent_landing(response, error="invalid_target")
    assert "resource" in query["error_description"]
    assert counts() == before
