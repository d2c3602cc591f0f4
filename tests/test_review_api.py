"""The auditors' REST API (chain_grant.api, mounted at /api/): authentication and
authorisation (staff session or an OAuth token with chains:read / chains:revoke),
one JSON error shape, the chain list with its filters and pagination, the tree,
verification, signed evidence (checked offline against the published JWKS),
revocation through the API and its effect on the real endpoints, the OpenAPI
schema, and query counts that do not grow with a chain's size.

Runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from jwcrypto import jwk, jws
from jwcrypto.common import JWException
from oauth2_provider.models import get_access_token_model, get_application_model

from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant
from tests import helpers
from tests.factories import build_chain
from tests.helpers import (
    SECRET,
    assert_no_secret,
    b64url,
    b64url_decode,
    basic_auth,
    bearer,
    make_token,
    verify_evidence_offline,
)

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()
User = get_user_model()
ERROR_KEYS = {"error", "error_description"}


# --- helpers and fixtures ---------------------------------------------------------------


def assert_error(response, status: int | tuple[int, ...], error: str | None = None) -> dict:
    """The API's one error shape: exactly error and error_description, non-empty strings."""
    body = helpers.assert_error(response, status, error)
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["error"], str) and isinstance(body["error_description"], str) and body["error_description"]
    return body


def grant_revoke_permission(user):
    user.user_permissions.add(
        Permission.objects.get(codename="revoke_chainedgrant", content_type__app_label="chain_grant")
    )
    return User.objects.get(pk=user.pk)  # drop the permission cache


@pytest.fixture
def staff(db):
    return User.objects.create_user("auditor", "auditor@example.com", "pw", is_staff=True)


@pytest.fixture
def revoker(db):
    user = User.objects.create_user("revoker", "revoker@example.com", "pw", is_staff=True)
    return grant_revoke_permission(user)


@pytest.fixture
def api(staff):
    """A staff session (its own client: Flow's client logs in and out as the person)."""
    client = Client()
    client.force_login(staff)
    return client


# --- authentication and authorisation ---------------------------------------------------

READ_URLS = ["/api/chains/", "/api/chains/{id}/", "/api/chains/{id}/verify/", "/api/chains/{id}/evidence/"]


@pytest.fixture
def chain_root(app, alice):
    return build_chain(app, alice, 4)


@pytest.mark.parametrize("url", READ_URLS)
def test_no_credentials_is_401_json(client, chain_root, url):
    body = assert_error(client.get(url.format(id=chain_root.pk)), 401)
    assert body["error"] == "invalid_token"


def test_no_credentials_revoke_is_401_and_revokes_nothing(client, chain_root):
    assert_error(client.post(f"/api/steps/{chain_root.pk}/revoke/"), 401)
    assert not ChainedGrant.objects.filter(revoked_at__isnull=False).exists()


def test_unknown_bearer_token_is_401(client, chain_root):
    response = client.get("/api/chains/", **bearer("no-such-token"))
    assert_error(response, 401, "invalid_token")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_staff_session_can_list_and_read(api, chain_root):
    assert api.get("/api/chains/").status_code == 200
    for url in READ_URLS[1:]:
        assert api.get(url.format(id=chain_root.pk)).status_code == 200, url


@pytest.mark.parametrize("url", READ_URLS)
def test_non_staff_session_is_403(client, alice, chain_root, url):
    client.force_login(alice)
    assert_error(client.get(url.format(id=chain_root.pk)), 403)


def test_token_with_read_scope_for_staff_reads(client, staff, app, chain_root):
    raw = make_token(staff, app, "chains:read")
    for url in READ_URLS:
        response = client.get(url.format(id=chain_root.pk), **bearer(raw))
        assert response.status_code == 200, (url, response.content)


def test_token_with_read_scope_for_non_staff_is_403(client, alice, app, chain_root):
    raw = make_token(alice, app, "chains:read chains:revoke")
    for url in READ_URLS:
        assert_error(client.get(url.format(id=chain_root.pk), **bearer(raw)), 403)


def test_token_without_the_scope_is_403(client, staff, app, chain_root):
    raw = make_token(staff, app, "openid read write")
    assert_error(client.get("/api/chains/", **bearer(raw)), 403, "insufficient_scope")


def test_expired_token_is_401(client, staff, app, chain_root):
    raw = make_token(staff, app, "chains:read", expires_in=-10)
    assert_error(client.get("/api/chains/", **bearer(raw)), 401)


def test_token_in_query_string_is_not_accepted(client, staff, app, chain_root):
    """RFC 9700 token transport: the header only (never a URL that ends up in logs)."""
    raw = make_token(staff, app, "chains:read")
    assert_error(client.get(f"/api/chains/?access_token={raw}"), 401)


def test_token_of_a_deactivated_staff_user_is_refused(client, staff, app, chain_root):
    """A staff member who was deactivated (left, compromised) keeps an unexpired token:
    it must not read chains any more, as their session would not."""
    raw = make_token(staff, app, "chains:read")
    assert client.get("/api/chains/", **bearer(raw)).status_code == 200
    User.objects.filter(pk=staff.pk).update(is_active=False)
    assert_error(client.get("/api/chains/", **bearer(raw)), (401, 403))


class TestRevokeAuthorisation:
    """Revoking needs chains:revoke (for a token) AND the revoke_chainedgrant permission."""

    def url(self, step):
        return f"/api/steps/{step.pk}/revoke/"

    def assert_refused(self, response, root):
        assert_error(response, 403)
        assert not ChainedGrant.objects.filter(root=root, revoked_at__isnull=False).exists()

    def test_read_scope_is_not_enough(self, client, revoker, app, chain_root):
        raw = make_token(revoker, app, "chains:read")
        self.assert_refused(client.post(self.url(chain_root), **bearer(raw)), chain_root)

    def test_revoke_scope_without_the_permission(self, client, staff, app, chain_root):
        raw = make_token(staff, app, "chains:read chains:revoke")
        self.assert_refused(client.post(self.url(chain_root), **bearer(raw)), chain_root)

    def test_permission_and_revoke_scope_for_a_non_staff_user(self, client, alice, app, chain_root):
        alice = grant_revoke_permission(alice)
        raw = make_token(alice, app, "chains:revoke")
        self.assert_refused(client.post(self.url(chain_root), **bearer(raw)), chain_root)

    def test_staff_session_without_the_permission(self, api, chain_root):
        self.assert_refused(api.post(self.url(chain_root)), chain_root)

    def test_revoke_scope_and_permission(self, client, revoker, app, chain_root):
        raw = make_token(revoker, app, "chains:revoke")
        response = client.post(self.url(chain_root), **bearer(raw))
        assert response.status_code == 200, response.content
        assert response.json() == {"step": str(chain_root.pk), "chain_id": str(chain_root.pk), "revoked": 4}

    def test_session_with_the_permission(self, revoker, chain_root):
        client = Client()
        client.force_login(revoker)
        response = client.post(self.url(chain_root), {"reason": "incident 42"}, content_type="application/json")
        assert response.status_code == 200 and response.json()["revoked"] == 4
        root = ChainedGrant.objects.get(pk=chain_root.pk)
        assert root.revoked_reason == "incident 42 (revoker)"

    def test_session_revoke_needs_the_csrf_token(self, revoker, chain_root):
        client = Client(enforce_csrf_checks=True)
        client.force_login(revoker)
        self.assert_refused(client.post(self.url(chain_root)), chain_root)

    def test_get_is_405_json(self, client, revoker, app, chain_root):
        raw = make_token(revoker, app, "chains:revoke")
        assert_error(client.get(self.url(chain_root), **bearer(raw)), 405, "method_not_allowed")

    def test_unknown_and_malformed_step_ids_are_404(self, client, revoker, app, chain_root):
        raw = make_token(revoker, app, "chains:revoke")
        for step_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", "1"):
            assert_error(client.post(f"/api/steps/{step_id}/revoke/", **bearer(raw)), 404, "not_found")

    def test_reason_too_long_is_400(self, client, revoker, app, chain_root):
        raw = make_token(revoker, app, "chains:revoke")
        response = client.post(
            self.url(chain_root), {"reason": "x" * 201}, content_type="application/json", **bearer(raw)
        )
        body = assert_error(response, 400, "invalid_request")
        assert "reason" in body["error_description"]
        assert not ChainedGrant.objects.filter(revoked_at__isnull=False).exists()


# --- list ---------------------------------------------------------------------------------


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["chain_id"] for row in response.json()["results"]]


def test_list_summary_fields(api, real_chain):
    body = api.get("/api/chains/").json()
    assert body["count"] == 1 and body["next"] is None and body["previous"] is None
    row = body["results"][0]
    assert row["chain_id"] == real_chain.chain_id
    assert row["kind"] == "user" and row["actor"] == "alice" and row["user"] == "alice"
    assert row["application"] == "chain-client"
    assert row["scope"] == "openid read write"
    assert row["steps"] == 5
    assert row["live_steps"] == 3  # root (its DOT code unused), planner, researcher; 2 exchanged
    assert row["state"] == "live"
    assert_no_secret(api.get("/api/chains/").content, real_chain)


def test_list_pagination(api, app, alice):
    roots = [build_chain(app, alice, 1, code_prefix=f"p{i}") for i in range(7)]
    newest_first = [str(r.pk) for r in sorted(roots, key=lambda r: r.created, reverse=True)]
    first = api.get("/api/chains/?limit=3")
    body = first.json()
    assert body["count"] == 7 and len(body["results"]) == 3
    assert "limit=3" in body["next"] and "offset=3" in body["next"] and body["previous"] is None
    second = api.get(body["next"])
    third = api.get("/api/chains/?limit=3&offset=6")
    assert third.json()["next"] is None and len(third.json()["results"]) == 1
    assert ids(first) + ids(second) + ids(third) == newest_first
    assert api.get("/api/chains/?limit=3&offset=100").json()["results"] == []
    assert len(ids(api.get("/api/chains/?limit=100000"))) == 7  # capped at max_limit, no error


@pytest.fixture
def many(app, make_app, alice, bob, planner, flow):
    """Chains to filter: alice's live, ended and revoked chains on chain-client, bob's on
    another client, and a real hop by the planner agent."""
    other = make_app("other-client")
    c = type("Chains", (), {})()
    c.live = build_chain(app, alice, 3, code_prefix="live")
    c.ended = build_chain(app, alice, 3, code_prefix="ended")
    ChainedGrant.objects.filter(root=c.ended).update(exchanged_at=timezone.now())
    c.revoked = build_chain(app, alice, 3, code_prefix="revoked")
    lifecycle.revoke_subtree(c.revoked, "test")
    c.bob = build_chain(other, bob, 2, code_prefix="bob")
    code, _ = flow.authorize(alice)
    flow.advance(code, planner)
    c.planned = lifecycle.find_step(code)
    c.old = build_chain(app, alice, 1, code_prefix="old")
    ChainedGrant.objects.filter(pk=c.old.pk).update(created=timezone.now() - timedelta(days=30))
    c.all = {str(r.pk) for r in (c.live, c.ended, c.revoked, c.bob, c.planned, c.old)}
    return c


def test_list_filters(api, many):
    def found(**params) -> set[str]:
        response = api.get("/api/chains/", params)
        assert response.json()["count"] == len(ids(response))
        return set(ids(response))

    assert found() == many.all
    assert found(application="other-client") == {str(many.bob.pk)}
    assert found(application="no-such-client") == set()
    assert found(user="bob") == {str(many.bob.pk)}
    assert found(agent="planner") == {str(many.planned.pk)}
    assert found(agent="nobody") == set()
    assert found(state="revoked") == {str(many.revoked.pk)}
    assert found(state="ended") == {str(many.ended.pk)}
    assert found(state="live") == many.all - {str(many.revoked.pk), str(many.ended.pk)}
    week_ago = (timezone.now() - timedelta(days=7)).isoformat()
    assert found(created_before=week_ago) == {str(many.old.pk)}
    assert found(created_after=week_ago) == many.all - {str(many.old.pk)}
    assert found(created_after=week_ago, user="alice", state="live") == {str(many.live.pk), str(many.planned.pk)}
    # "Z" and a naive date-time (read as UTC) are ISO 8601 too
    assert found(created_before=(timezone.now() - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")) == {
        str(many.old.pk)
    }


def test_list_state_per_row(api, many):
    states = {row["chain_id"]: row["state"] for row in api.get("/api/chains/").json()["results"]}
    assert states[str(many.live.pk)] == "live"
    assert states[str(many.ended.pk)] == "ended"
    assert states[str(many.revoked.pk)] == "revoked"


@pytest.mark.parametrize(
    "params",
    [
        {"state": "dead"},
        {"state": "LIVE"},
        {"created_after": "yesterday"},
        {"created_before": "2025-01-01T00:00:00+zz"},
    ],
)
def test_list_bad_filter_is_400_json(api, chain_root, params):
    body = assert_error(api.get("/api/chains/", params), 400, "invalid_request")
    assert next(iter(params)) in body["error_description"]


@pytest.mark.parametrize("value", ["2025-13-01T00:00:00", "2025-02-30T10:00:00", "2025-01-01T25:00:00"])
def test_list_well_formed_but_impossible_date_is_400(api, chain_root, value):
    """parse_datetime raises ValueError (not None) for a well-formed impossible date."""
    assert_error(api.get("/api/chains/", {"created_after": value}), 400, "invalid_request")


# --- tree ---------------------------------------------------------------------------------


def test_tree_structure(api, real_chain):
    response = api.get(f"/api/chains/{real_chain.chain_id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["chain_id"] == real_chain.chain_id
    assert body["verification"] == {"ok": True, "checked": 5, "first_bad_step": None, "problems": []}
    steps = body["steps"]
    by_actor = {s["actor"]: s for s in steps}
    assert set(by_actor) == {"alice", "planner", "researcher", "security", "merger"}

    # parents first: every step's parent appears before it; depth-first order
    seen = set()
    for s in steps:
        assert s["parent"] is None or s["parent"] in seen
        seen.add(s["id"])
    assert [s["actor"] for s in steps] == ["alice", "planner", "researcher", "merger", "security"]

    root = steps[0]
    assert root["parent"] is None and root["depth"] == 0 and root["kind"] == "user"
    assert root["user"] == "alice" and root["agent"] is None and root["proof"] is None
    assert root["scope_narrowed"] == [] and root["scope_added"] == []
    assert by_actor["planner"]["parent"] == root["id"]
    assert set(by_actor["planner"]["children"]) == {by_actor["researcher"]["id"], by_actor["security"]["id"]}
    assert by_actor["merger"]["parent"] == by_actor["researcher"]["id"] and by_actor["merger"]["depth"] == 3

    # attenuation: what each step dropped from its parent
    assert by_actor["planner"]["scope"] == "openid read write" and by_actor["planner"]["scope_narrowed"] == []
    assert by_actor["researcher"]["scope"] == "openid read"
    assert by_actor["researcher"]["scope_narrowed"] == ["write"] and by_actor["researcher"]["scope_added"] == []
    assert by_actor["security"]["scope_narrowed"] == ["openid", "write"]

    # the verified proof of every agent step, with its claims
    for name in ("planner", "researcher", "security", "merger"):
        s = by_actor[name]
        assert s["kind"] == "agent" and s["agent"] == name and s["subject"] == name and s["user"] == "alice"
        claims = s["proof"]["claims"]
        assert claims["sub"] == name and claims["aud"] == "http://testserver/oauth"
        assert claims["jti"] == s["proof"]["jti"] and claims["c_hash"]
        assert len(s["proof"]["digest"]) == 64
        assert len(s["code_digest_prefix"]) == 8 and len(s["link_hash"]) == 64

    # state and what was issued
    assert by_actor["merger"]["state"] == "exchanged" and by_actor["merger"]["access_token_id"]
    assert by_actor["researcher"]["state"] == "live" and by_actor["researcher"]["access_token_id"] is None

    # never a code, a verifier, a token, or a full code digest
    assert_no_secret(response.content, real_chain)


def test_tree_shows_added_scope_of_a_tampered_row(api, real_chain):
    researcher = real_chain.step["researcher"]
    ChainedGrant.objects.filter(pk=researcher.pk).update(scope="openid read write admin")
    body = api.get(f"/api/chains/{real_chain.chain_id}/").json()
    step = next(s for s in body["steps"] if s["id"] == str(researcher.pk))
    assert step["scope_added"] == ["admin"] and step["scope_narrowed"] == []
    assert body["verification"]["ok"] is False
    assert body["verification"]["first_bad_step"] == str(researcher.pk)


@pytest.mark.parametrize("suffix", ["", "verify/", "evidence/"])
@pytest.mark.parametrize("chain_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "12345", "%00", "0" * 300])
def test_unknown_or_malformed_chain_is_404_json(api, chain_root, chain_id, suffix):
    assert_error(api.get(f"/api/chains/{chain_id}/{suffix}"), 404, "not_found")


def test_a_step_id_that_is_not_a_root_is_404(api, real_chain):
    """Chains are addressed by their root's id (chain_id), not by any step's."""
    assert_error(api.get(f"/api/chains/{real_chain.step['planner'].pk}/"), 404, "not_found")


# --- verify ---------------------------------------------------------------------------------


def test_verify_ok_then_tampered(api, real_chain):
    url = f"/api/chains/{real_chain.chain_id}/verify/"
    assert api.get(url).json() == {"ok": True, "checked": 5, "first_bad_step": None, "problems": []}
    security = real_chain.step["security"]
    ChainedGrant.objects.filter(pk=security.pk).update(scope="openid read write")
    body = api.get(url).json()
    assert body["ok"] is False and body["first_bad_step"] == str(security.pk)
    assert body["checked"] == 5  # every step is checked; each problem names its step
    assert {p["step"] for p in body["problems"]} == {str(security.pk)}


def test_verify_flags_a_moved_step(api, real_chain):
    """Re-parenting a step (its link to the parent) is caught as well."""
    merger = real_chain.step["merger"]
    ChainedGrant.objects.filter(pk=merger.pk).update(parent=real_chain.step["security"])
    body = api.get(f"/api/chains/{real_chain.chain_id}/verify/").json()
    assert body["ok"] is False and body["first_bad_step"] == str(merger.pk)


# --- evidence: the offline check ---------------------------------------------------------


def test_evidence_verifies_offline_against_the_jwks(api, client, real_chain):
    bundle = api.get(f"/api/chains/{real_chain.chain_id}/evidence/").json()
    assert set(bundle) == {"evidence", "jws"}
    discovery = client.get("/oauth/.well-known/openid-configuration").json()
    assert discovery["jwks_uri"].endswith("/oauth/.well-known/jwks.json")
    jwks = client.get("/oauth/.well-known/jwks.json").json()  # public, no credentials
    payload = verify_evidence_offline(bundle, jwks)
    assert payload["iss"] == "http://testserver/oauth" and payload["typ"] == "chain-evidence+json"
    assert abs(payload["iat"] - timezone.now().timestamp()) < 60
    assert payload["chain_id"] == real_chain.chain_id
    tree = api.get(f"/api/chains/{real_chain.chain_id}/").json()
    assert payload["steps"] == tree["steps"] and payload["verification"] == tree["verification"]
    assert_no_secret(json.dumps(bundle).encode(), real_chain)


def test_tampered_evidence_fails_the_offline_check(api, client, real_chain):
    bundle = api.get(f"/api/chains/{real_chain.chain_id}/evidence/").json()
    jwks = client.get("/oauth/.well-known/jwks.json").json()

    # 1. the readable JSON edited (a scope widened): no longer what was signed
    edited = json.loads(json.dumps(bundle))
    edited["evidence"]["steps"][2]["scope"] = "openid read write admin"
    with pytest.raises(ValueError, match="differs"):
        verify_evidence_offline(edited, jwks)

    # 2. the signed payload itself replaced (and the JSON to match): bad signature
    header, _, signature = bundle["jws"].split(".")
    forged = dict(edited, jws=".".join([header, b64url(json.dumps(edited["evidence"]).encode()), signature]))
    with pytest.raises(JWException):
        verify_evidence_offline(forged, jwks)

    # 3. a bundle signed with some other RSA key under the IdP's kid
    other = jwk.JWK.generate(kty="RSA", size=2048)
    token = jws.JWS(json.dumps(bundle["evidence"]).encode())
    token.add_signature(other, alg="RS256", protected=json.dumps(token_header(bundle)))
    with pytest.raises(JWException):
        verify_evidence_offline(dict(bundle, jws=token.serialize(compact=True)), jwks)

    assert verify_evidence_offline(bundle, jwks)  # the original still verifies


def token_header(bundle) -> dict:
    return json.loads(b64url_decode(bundle["jws"].split(".")[0]))


def test_evidence_is_signed_with_the_current_oidc_key(api, client, real_chain):
    bundle = api.get(f"/api/chains/{real_chain.chain_id}/evidence/").json()
    kids = [k["kid"] for k in client.get("/oauth/.well-known/jwks.json").json()["keys"]]
    assert token_header(bundle)["kid"] == kids[0]


# --- revoke through the API, seen by the real endpoints ----------------------------------


def test_revoke_via_api_then_codes_and_tokens_are_dead(flow, revoker, app, real_chain):
    raw = make_token(revoker, app, "chains:revoke")
    researcher = real_chain.step["researcher"]
    response = Client().post(
        f"/api/steps/{researcher.pk}/revoke/", {"reason": "leaked key"}, content_type="application/json", **bearer(raw)
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"step": str(researcher.pk), "chain_id": real_chain.chain_id, "revoked": 2}

    r_code, r_verifier, _ = real_chain.researcher
    merger_agent = real_chain.agents["merger"]
    hop = flow.hop(r_code, merger_agent.proof(r_code))  # code_chain from the revoked step
    assert hop.status_code == 400 and hop.json()["error"] == "invalid_grant"
    exchange = flow.exchange(r_code, r_verifier)  # its (never exchanged) code
    assert exchange.status_code == 400 and exchange.json()["error"] == "invalid_grant"
    assert flow.introspect(real_chain.tokens["merger"]["access_token"])["active"] is False  # issued below it
    assert flow.refresh(real_chain.tokens["merger"]["refresh_token"]).json()["error"] == "invalid_grant"

    # the sibling and the ancestors are untouched
    assert flow.introspect(real_chain.tokens["security"]["access_token"])["active"] is True
    p_code = real_chain.planner[0]
    assert flow.hop(p_code, real_chain.agents["researcher"].proof(p_code)).status_code == 200

    # the tree shows it, with who revoked and why
    tree = Client().get(f"/api/chains/{real_chain.chain_id}/", **bearer(make_token(revoker, app, "chains:read")))
    states = {s["id"]: (s["state"], s["revoked_reason"]) for s in tree.json()["steps"]}
    step = {name: str(real_chain.step[name].pk) for name in real_chain.step}
    assert states[step["researcher"]] == ("revoked", "leaked key (revoker)")
    assert states[step["merger"]] == ("revoked", "leaked key (revoker)")
    assert states[step["security"]][0] == "exchanged" and states[step["planner"]][0] == "live"
    assert len(states) == 6  # the new hop from the planner

    again = Client().post(f"/api/steps/{researcher.pk}/revoke/", **bearer(raw))
    assert again.json()["revoked"] == 0  # idempotent


def test_revoke_root_via_api_kills_the_whole_chain(flow, revoker, app, real_chain):
    raw = make_token(revoker, app, "chains:revoke")
    response = Client().post(f"/api/steps/{real_chain.chain_id}/revoke/", **bearer(raw))
    assert response.json()["revoked"] == 5
    for name in ("merger", "security"):
        assert flow.introspect(real_chain.tokens[name]["access_token"])["active"] is False
    root_hop = flow.hop(real_chain.root_code, real_chain.agents["planner"].proof(real_chain.root_code))
    assert root_hop.json()["error"] == "invalid_grant"
    row = Client().get("/api/chains/", **bearer(make_token(revoker, app, "chains:read"))).json()["results"][0]
    assert row["state"] == "revoked" and row["live_steps"] == 0


# --- OpenAPI ----------------------------------------------------------------------------------

PATHS = {
    "/api/chains/": {"get"},
    "/api/chains/{chain_id}/": {"get"},
    "/api/chains/{chain_id}/verify/": {"get"},
    "/api/chains/{chain_id}/evidence/": {"get"},
    "/api/steps/{step_id}/revoke/": {"post"},
}


@pytest.mark.parametrize("who", ["anonymous", "staff"])
def test_openapi_schema(client, staff, who):
    if who == "staff":
        client.force_login(staff)
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200, response.content
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "chain_grant review API"
    for path, methods in PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), path
    ops = {op["operationId"] for item in schema["paths"].values() for op in item.values() if isinstance(op, dict)}
    assert {"chains_list", "chains_tree", "chains_verify", "chains_evidence", "steps_revoke"} <= ops
    list_params = {p["name"] for p in schema["paths"]["/api/chains/"]["get"]["parameters"]}
    assert {"application", "agent", "user", "state", "created_after", "created_before"} <= list_params
    tree = schema["paths"]["/api/chains/{chain_id}/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert tree["schema"]["$ref"] == "#/components/schemas/ChainTree"
    step = schema["components"]["schemas"]["Step"]["properties"]
    assert {"scope_narrowed", "scope_added", "proof", "code_digest_prefix", "link_hash"} <= set(step)
    assert not any(name == "code" or name.endswith("_code") for name in step)


def test_openapi_documents_the_paginated_list(client):
    schema = client.get("/api/schema/?format=json").json()
    op = schema["paths"]["/api/chains/"]["get"]
    assert {"limit", "offset"} <= {p["name"] for p in op["parameters"]}
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]) == {
        "count",
        "next",
        "previous",
        "results",
    }


def test_openapi_documents_bearer_tokens_and_scopes(client):
    schema = client.get("/api/schema/?format=json").json()
    for path, methods in PATHS.items():
        for method in methods:
            scope = "chains:revoke" if method == "post" else "chains:read"
            assert {"oauth2": [scope]} in schema["paths"][path][method]["security"], (path, method)


def test_openapi_schema_yaml_by_default(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


def test_openapi_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=StringIO())
    assert "/api/chains/{chain_id}/evidence/" in out.read_text()


# --- query counts do not grow ----------------------------------------------------------------

# A staff session: session + user + the chain's steps (one query, every row joined,
# its head too) + its events + its join rows. A token: token (joined with its user)
# instead of session and user. Nothing per step in either case.
TREE_QUERIES = 5
LIST_QUERIES = 4  # session + user + count + one page (step counts are subqueries)


@pytest.mark.parametrize("size", [10, 1000])
def test_tree_query_count_is_constant(api, app, alice, size, django_assert_max_num_queries):
    root = build_chain(app, alice, size)
    with django_assert_max_num_queries(TREE_QUERIES):
        response = api.get(f"/api/chains/{root.pk}/")
    assert response.status_code == 200 and len(response.json()["steps"]) == size
    assert response.json()["verification"]["ok"] is True


@pytest.mark.parametrize("size", [10, 1000])
def test_tree_query_count_is_constant_with_a_token(client, staff, app, alice, size, django_assert_max_num_queries):
    root = build_chain(app, alice, size)
    raw = make_token(staff, app, "chains:read")
    for suffix in ("", "verify/", "evidence/"):
        with django_assert_max_num_queries(TREE_QUERIES):
            response = client.get(f"/api/chains/{root.pk}/{suffix}", **bearer(raw))
        assert response.status_code == 200


@pytest.mark.parametrize("count", [3, 30])
def test_list_query_count_is_constant(api, app, alice, planner, count, django_assert_max_num_queries):
    for i in range(count):
        build_chain(app, alice, 4, code_prefix=f"l{i}")
    with django_assert_max_num_queries(LIST_QUERIES):
        response = api.get("/api/chains/", {"limit": 50})
    assert response.json()["count"] == count and len(response.json()["results"]) == count
    for params in ({"state": "live"}, {"agent": "planner"}, {"state": "ended", "application": "chain-client"}):
        with django_assert_max_num_queries(LIST_QUERIES):
            assert api.get("/api/chains/", params).status_code == 200


# --- odd input and odd data ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "application",
        "agent",
        "user",
        "state",
        "created_after",
        "limit",
        "offset",
    ],
)
def test_list_filters_never_500_on_a_nul(api, chain_root, name):
    response = api.get("/api/chains/", {name: "a\x00b"})
    assert response.status_code in (200, 400), (response.status_code, response.content[:300])
    if response.status_code == 400:
        assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("name", ["application", "agent", "user", "state", "created_after", "limit", "offset"])
@pytest.mark.parametrize("value", ["é" * 10, "x" * 5000, "' OR 1=1 --", "%", "_"])
def test_list_filters_never_500(api, chain_root, name, value):
    response = api.get("/api/chains/", {name: value})
    assert response.status_code in (200, 400), (response.status_code, response.content[:300])
    if response.status_code == 400:
        assert_error(response, 400, "invalid_request")


@pytest.fixture
def deleted_person_chain(make_app, staff):
    carol = User.objects.create_user("carol", "carol@example.com", "pw")
    root = build_chain(make_app("carol-client", user=staff), carol, 3)
    carol.delete()  # the steps keep their rows (user: SET_NULL), as the design intends
    return root


def test_chain_of_a_deleted_person_still_reads(api, deleted_person_chain):
    tree = api.get(f"/api/chains/{deleted_person_chain.pk}/").json()
    assert [s["user"] for s in tree["steps"]] == [None, None, None]
    assert tree["steps"][0]["actor"] == "carol"  # the username the step recorded, the account gone
    row = api.get("/api/chains/", {"application": "carol-client"}).json()["results"][0]
    assert row["user"] is None and row["steps"] == 3


def test_deleting_the_person_is_not_tampering(api, deleted_person_chain):
    assert api.get(f"/api/chains/{deleted_person_chain.pk}/verify/").json()["ok"] is True


def test_client_credentials_token_is_refused(client, make_app, staff, chain_root):
    """README: "Client-credentials tokens are refused: a scope alone is not an auditor" —
    even for a client owned by a staff user (DOT issues them with user=None)."""
    Application = get_application_model()
    machine = make_app(
        "machine", enabled=False, user=staff, authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS
    )
    issued = client.post(
        "/oauth/token",
        {"grant_type": "client_credentials", "scope": "chains:read chains:revoke"},
        HTTP_AUTHORIZATION=basic_auth(machine.client_id, SECRET),
    )
    assert issued.status_code == 200, issued.content
    raw = issued.json()["access_token"]
    assert AccessToken.objects.get(token_checksum=hashlib.sha256(raw.encode()).hexdigest()).user is None
    assert_error(client.get("/api/chains/", **bearer(raw)), 403)
    assert_error(client.post(f"/api/steps/{chain_root.pk}/revoke/", **bearer(raw)), 403)


def test_api_reference_page_points_at_the_apis_own_schema(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<redoc" in html.lower() or "Redoc.init" in html
    assert "/api/schema/" in html


def test_schema_needs_no_drf_setting_and_holds_only_chain_grants_endpoints(client, settings):
    """An IdP with no REST_FRAMEWORK / SPECTACULAR_SETTINGS of its own (DRF's default
    schema class) still gets the API's schema, with DOT's URLs for the OAuth flow."""
    settings.REST_FRAMEWORK = {}
    settings.SPECTACULAR_SETTINGS = {}
    schema = client.get("/api/schema/?format=json").json()
    assert schema["info"]["title"] == "chain_grant review API"
    assert set(schema["paths"]) == set(PATHS)
    flow = schema["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == "/oauth/authorize/" and flow["tokenUrl"] == "/oauth/token/"
    assert set(flow["scopes"]) == {"chains:read", "chains:revoke"}
