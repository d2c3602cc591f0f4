"""The admin review screens (chain_grant.admin) through Django's test client: the
Chains and Steps lists with their filters and search, the chain page (tree,
integrity ✓/✗, evidence download), revoking a subtree behind a permission and a
confirmation page (and its effect on the real endpoints), query counts that do not
grow with a chain, and agents: registering one by pasting a public key, refusing
private keys, rotating keys, activating and deactivating.

No code, verifier or token ever appears in admin HTML; nothing can be added or
deleted by hand. Runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from chain_grant.client import generate_key
from chain_grant.core import integrity, lifecycle
from chain_grant.models import Agent, AgentKey, ChainedGrant
from tests.factories import build_chain
from tests.helpers import ISSUER, TestAgent, assert_no_secret, verify_evidence_offline

pytestmark = pytest.mark.django_db
User = get_user_model()
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
VIEW_PERMS = ("view_chain", "view_chainedgrant", "view_agent")


def staff_user(username: str, *codenames: str):
    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="chain_grant", codename__in=codenames))
    return user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def reviewer(db):
    """Staff who may look, but not revoke."""
    return staff_user("reviewer", *VIEW_PERMS)


@pytest.fixture
def revoker(db):
    return staff_user("revoker", *VIEW_PERMS, "revoke_chainedgrant")


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def admin_client(reviewer):
    return logged_in(reviewer)


def tree_url(chain_id) -> str:
    return reverse("admin:chain_grant_chain_tree", args=[chain_id])


def revoke_url(step) -> str:
    return reverse("admin:chain_grant_step_revoke", args=[step.pk])


def results(response) -> set[str]:
    """The primary keys a changelist shows."""
    assert response.status_code == 200, response.content[:500]
    return {str(obj.pk) for obj in response.context["cl"].result_list}


# --- the lists -------------------------------------------------------------------------


@pytest.fixture
def scene(real_chain, app, make_app, alice, flow, make_agent):
    """The real chain, plus: a second client's chain, a revoked chain and a chain
    whose root code has expired."""
    s = type("Scene", (), {})()
    s.real = real_chain
    s.other_app = make_app("other-client")
    bob = User.objects.create_user("bob", "bob@example.com", "pw")
    s.other = build_chain(s.other_app, bob, 2, code_prefix="other")
    s.revoked = build_chain(app, alice, 2, code_prefix="revoked")
    lifecycle.revoke_subtree(s.revoked, "test")
    s.expired = build_chain(app, alice, 1, code_prefix="expired")
    ChainedGrant.objects.filter(pk=s.expired.pk).update(expires=timezone.now() - timedelta(minutes=1))
    s.chain_ids = {real_chain.chain_id, str(s.other.pk), str(s.revoked.pk), str(s.expired.pk)}
    return s


CHAINS = "/admin/chain_grant/chain/"
STEPS = "/admin/chain_grant/chainedgrant/"


def test_chain_list_and_filters(admin_client, scene):
    real = scene.real
    assert results(admin_client.get(CHAINS)) == scene.chain_ids
    assert results(admin_client.get(CHAINS, {"application__id__exact": scene.other_app.pk})) == {str(scene.other.pk)}
    assert results(admin_client.get(CHAINS, {"state": "revoked"})) == {str(scene.revoked.pk)}
    assert results(admin_client.get(CHAINS, {"state": "expired"})) == {str(scene.expired.pk)}
    assert results(admin_client.get(CHAINS, {"state": "live"})) == {real.chain_id, str(scene.other.pk)}
    assert results(admin_client.get(CHAINS, {"state": "exchanged"})) == set()  # roots' codes unused here
    assert results(admin_client.get(CHAINS, {"kind": "user"})) == scene.chain_ids
    assert results(admin_client.get(CHAINS, {"kind": "agent"})) == set()  # a chain's root is never an agent
    # search: the person, or an exact chain id
    assert results(admin_client.get(CHAINS, {"q": "alice"})) == scene.chain_ids - {str(scene.other.pk)}
    assert results(admin_client.get(CHAINS, {"q": "bob"})) == {str(scene.other.pk)}
    assert results(admin_client.get(CHAINS, {"q": real.chain_id})) == {real.chain_id}
    assert results(admin_client.get(CHAINS, {"q": real.chain_id.upper()})) == {real.chain_id}
    assert results(admin_client.get(CHAINS, {"q": str(uuid.uuid4())})) == set()
    # odd values never fail
    for params in ({"state": "bogus"}, {"q": "%00'\";--"}, {"q": "x" * 300}, {"created__gte": "nonsense"}):
        assert admin_client.get(CHAINS, params).status_code in (200, 302)


def filter_link(response, title: str, display: str) -> str:
    """The query string the changelist's own sidebar links to for one filter choice."""
    cl = response.context["cl"]
    for spec in cl.filter_specs:
        if str(spec.title) == title:
            for choice in spec.choices(cl):
                if str(choice["display"]) == display:
                    return choice["query_string"]
    raise AssertionError(f"no filter choice {title}={display}")


def test_chain_list_filters_by_agent(admin_client, scene):
    """Chains in which an agent acted, through the sidebar's link (whatever its parameter)."""
    link = filter_link(admin_client.get(CHAINS), "agent", "planner")
    assert results(admin_client.get(CHAINS + link)) == {scene.real.chain_id}
    merger = filter_link(admin_client.get(CHAINS), "agent", "merger")
    assert results(admin_client.get(CHAINS + merger)) == {scene.real.chain_id}


def test_chain_list_search_by_agent(admin_client, scene):
    assert results(admin_client.get(CHAINS, {"q": "planner"})) == {scene.real.chain_id}


def test_step_list_and_filters(admin_client, scene):
    real = scene.real
    all_steps = {str(pk) for pk in ChainedGrant.objects.values_list("pk", flat=True)}
    agent_steps = {str(real.step[name].pk) for name in real.agents}
    assert results(admin_client.get(STEPS)) == all_steps
    assert results(admin_client.get(STEPS, {"kind": "agent"})) == agent_steps | {
        str(pk) for pk in ChainedGrant.objects.filter(kind="agent", agent__isnull=True).values_list("pk", flat=True)
    }
    planner = real.agents["planner"].model
    assert results(admin_client.get(STEPS, {"agent__id__exact": planner.pk})) == {str(real.step["planner"].pk)}
    assert results(admin_client.get(STEPS, {"application__id__exact": scene.other_app.pk})) == {
        str(pk) for pk in ChainedGrant.objects.chain(scene.other.pk).values_list("pk", flat=True)
    }
    exchanged = {str(real.step["merger"].pk), str(real.step["security"].pk)}
    assert results(admin_client.get(STEPS, {"state": "exchanged"})) == exchanged
    assert results(admin_client.get(STEPS, {"state": "revoked"})) == {
        str(pk) for pk in ChainedGrant.objects.chain(scene.revoked.pk).values_list("pk", flat=True)
    }
    assert results(admin_client.get(STEPS, {"state": "expired"})) == {str(scene.expired.pk)}
    live = results(admin_client.get(STEPS, {"state": "live"}))
    assert live == {real.chain_id, str(real.step["planner"].pk), str(real.step["researcher"].pk)} | {
        str(pk) for pk in ChainedGrant.objects.chain(scene.other.pk).values_list("pk", flat=True)
    }
    # combined, and search: an agent, a username, an exact chain id
    assert results(admin_client.get(STEPS, {"kind": "agent", "state": "exchanged"})) == exchanged
    assert results(admin_client.get(STEPS, {"q": "researcher"})) == {str(real.step["researcher"].pk)}
    assert results(admin_client.get(STEPS, {"q": "bob"})) == {
        str(pk) for pk in ChainedGrant.objects.chain(scene.other.pk).values_list("pk", flat=True)
    }
    assert results(admin_client.get(STEPS, {"q": real.chain_id})) == {
        str(pk) for pk in ChainedGrant.objects.chain(real.root.pk).values_list("pk", flat=True)
    }


def test_lists_link_to_the_chain_page_and_hide_codes(admin_client, scene):
    for url in (CHAINS, STEPS, CHAINS + "?state=live", STEPS + "?kind=agent&q=alice"):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert tree_url(scene.real.chain_id) in response.content.decode()
        assert_no_secret(response.content, scene.real)
        assert b"delete_selected" not in response.content  # no bulk delete action
        assert b"addlink" not in response.content


def test_nothing_can_be_added_deleted_or_edited(admin_client, superuser, scene):
    real = scene.real
    for client in (admin_client, logged_in(superuser)):
        assert client.get(CHAINS + "add/").status_code == 403
        assert client.get(STEPS + "add/").status_code == 403
        assert client.post(STEPS + "add/", {"kind": "agent", "subject": "x"}).status_code == 403
        planner = real.step["planner"]
        assert client.get(f"{STEPS}{planner.pk}/delete/").status_code == 403
        assert client.post(f"{STEPS}{planner.pk}/delete/", {"post": "yes"}).status_code == 403
        assert client.post(f"{CHAINS}{real.chain_id}/delete/", {"post": "yes"}).status_code == 403
        # the change pages are the chain page
        change = client.get(f"{STEPS}{planner.pk}/change/")
        assert change.status_code == 302 and change["Location"] == tree_url(real.chain_id) + f"#step-{planner.pk}"
        assert client.get(f"{CHAINS}{real.chain_id}/change/")["Location"] == tree_url(real.chain_id)
        edit = client.post(f"{STEPS}{planner.pk}/change/", {"scope": "openid read write admin"})
        assert edit.status_code == 302
        history = client.get(f"{STEPS}{planner.pk}/history/")
        assert history.status_code == 200
        assert_no_secret(history.content, real)
    assert ChainedGrant.objects.count() == 10
    assert ChainedGrant.objects.get(pk=real.step["planner"].pk).scope == "openid read write"
    assert integrity.verify_chain(real.chain_id).ok


def test_staff_without_view_permission_and_non_staff_see_nothing(alice, scene):
    nobody = staff_user("nobody")
    for url in (
        CHAINS,
        STEPS,
        tree_url(scene.real.chain_id),
        reverse("admin:chain_grant_chain_evidence", args=[scene.real.chain_id]),
    ):
        assert logged_in(nobody).get(url).status_code == 403, url
        response = logged_in(alice).get(url)  # not staff: the admin login page
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- the chain page -----------------------------------------------------------------------


STEP_ITEM = re.compile(r'<li class="chain-step[^"]*" id="step-([0-9a-f-]{36})".*?</li>', re.S)


def step_items(html: str) -> dict[str, str]:
    """id → the <li> of each step on the chain page, in page order."""
    return {m.group(1): m.group(0) for m in STEP_ITEM.finditer(html)}


def test_chain_page_tree_and_integrity(admin_client, real_chain):
    response = admin_client.get(tree_url(real_chain.chain_id))
    assert response.status_code == 200
    html = response.content.decode()
    assert "✓" in html and "Integrity verified" in html and "✗" not in html
    assert "5 steps' link_hash recomputed and matching" in html
    items = step_items(html)
    order = [str(real_chain.root.pk)] + [
        str(real_chain.step[n].pk) for n in ("planner", "researcher", "merger", "security")
    ]
    assert list(items) == order  # depth first, parents before children
    researcher = items[str(real_chain.step["researcher"].pk)]
    assert 'data-depth="2"' in researcher and ">researcher</strong>" in researcher
    assert '<span class="scope-narrowed">write</span>' in researcher
    assert "Verified proof claims" in researcher and real_chain.step["researcher"].proof_jti in researcher
    assert "exchanged" in items[str(real_chain.step["merger"].pk)]
    assert ">alice</strong>" in items[str(real_chain.root.pk)]
    assert reverse("admin:chain_grant_chain_evidence", args=[real_chain.chain_id]) in html
    assert "revoke-link" not in html  # the reviewer may not revoke
    assert_no_secret(response.content, real_chain)


def test_chain_page_shows_the_first_bad_step_after_tampering(admin_client, real_chain):
    researcher = real_chain.step["researcher"]
    ChainedGrant.objects.filter(pk=researcher.pk).update(scope="openid read write admin")
    html = admin_client.get(tree_url(real_chain.chain_id)).content.decode()
    assert "✗" in html and "Integrity check failed" in html and "✓" not in html
    assert f'first step that does not match: <a href="#step-{researcher.pk}">{researcher.pk}</a>' in " ".join(
        html.split()
    )
    items = step_items(html)
    bad = [pk for pk, li in items.items() if "bad-step" in li.split(">", 1)[0]]
    assert bad == [str(researcher.pk)]
    assert '<span class="scope-added">+admin</span>' in items[str(researcher.pk)]


def test_chain_page_of_an_unknown_chain_is_404(admin_client):
    assert admin_client.get(tree_url(uuid.uuid4())).status_code == 404
    assert admin_client.get("/admin/chain_grant/chain/not-a-uuid/tree/").status_code in (302, 404)


def test_evidence_download(admin_client, client, real_chain):
    response = admin_client.get(reverse("admin:chain_grant_chain_evidence", args=[real_chain.chain_id]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="chain-{real_chain.chain_id}-evidence.json"'
    bundle = json.loads(response.content)
    assert set(bundle) == {"evidence", "jws"}
    payload = verify_evidence_offline(bundle, client.get("/oauth/.well-known/jwks.json").json())
    assert payload["chain_id"] == real_chain.chain_id and len(payload["steps"]) == 5
    assert payload["iss"] == ISSUER
    assert_no_secret(response.content, real_chain)
    assert admin_client.get(reverse("admin:chain_grant_chain_evidence", args=[uuid.uuid4()])).status_code == 404


# Session, user, the user's and their groups' permissions, the chain's steps (one
# query, every row and its head joined), its events and its join rows: nothing per step.
CHAIN_PAGE_QUERIES = 7


@pytest.mark.parametrize("size", [10, 1000])
def test_chain_page_query_count_is_constant(app, alice, revoker, size, django_assert_max_num_queries):
    root = build_chain(app, alice, size)
    client = logged_in(revoker)  # with revoke links: the most the page renders
    with django_assert_max_num_queries(CHAIN_PAGE_QUERIES):
        response = client.get(tree_url(root.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="chain-step') == size and html.count("revoke-link") == size
    assert "✓" in html


# --- revoking -----------------------------------------------------------------------------


def test_staff_without_the_permission_cannot_revoke(admin_client, real_chain):
    planner = real_chain.step["planner"]
    assert admin_client.get(revoke_url(planner)).status_code == 403
    assert admin_client.post(revoke_url(planner), {"reason": "x"}).status_code == 403
    assert "revoke-link" not in admin_client.get(tree_url(real_chain.chain_id)).content.decode()
    assert not ChainedGrant.objects.filter(revoked_at__isnull=False).exists()


def test_revoke_confirm_then_post(revoker, flow, real_chain):
    client = logged_in(revoker)
    page = client.get(tree_url(real_chain.chain_id)).content.decode()
    researcher = real_chain.step["researcher"]
    assert page.count("revoke-link") == 5 and revoke_url(researcher) in page

    confirm = client.get(revoke_url(researcher))
    assert confirm.status_code == 200
    html = confirm.content.decode()
    listing = re.search(r'<ul id="revoke-list">(.*?)</ul>', html, re.S).group(1)
    assert listing.count("<li") == 2  # researcher and merger, nothing else
    assert "<strong>researcher</strong>" in listing and "<strong>merger</strong>" in listing
    assert "planner" not in listing and "security" not in listing
    assert "This revokes 2 steps" in html and "(1 still live)" in html and "(1 exchanged)" in html
    assert_no_secret(confirm.content, real_chain)
    assert not ChainedGrant.objects.filter(revoked_at__isnull=False).exists()  # GET changes nothing

    response = client.post(revoke_url(researcher), {"reason": "agent key leaked"})
    assert response.status_code == 302 and response["Location"] == tree_url(real_chain.chain_id)
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Revoked 2 steps."]
    revoked = ChainedGrant.objects.filter(revoked_at__isnull=False)
    assert set(revoked.values_list("pk", flat=True)) == {researcher.pk, real_chain.step["merger"].pk}
    assert set(revoked.values_list("revoked_reason", flat=True)) == {"agent key leaked (revoker)"}

    # the real endpoints agree
    r_code, r_verifier, _ = real_chain.researcher
    hop = flow.hop(r_code, real_chain.agents["merger"].proof(r_code))
    assert hop.status_code == 400 and hop.json()["error"] == "invalid_grant"
    exchange = flow.exchange(r_code, r_verifier)
    assert exchange.status_code == 400 and exchange.json()["error"] == "invalid_grant"
    assert flow.introspect(real_chain.tokens["merger"]["access_token"])["active"] is False
    assert flow.introspect(real_chain.tokens["security"]["access_token"])["active"] is True

    # the page now shows them revoked, without revoke links, still verified
    html = client.get(tree_url(real_chain.chain_id)).content.decode()
    items = step_items(html)
    assert "revoke-link" not in items[str(researcher.pk)] and "agent key leaked (revoker)" in items[str(researcher.pk)]
    assert html.count("revoke-link") == 3 and "✓" in html  # revoking does not break integrity

    again = client.post(revoke_url(researcher), follow=True)
    assert [str(m) for m in again.context["messages"]] == ["Revoked 0 steps."]


def test_revoke_needs_the_csrf_token(revoker, real_chain):
    client = Client(enforce_csrf_checks=True)
    client.force_login(revoker)
    assert client.post(revoke_url(real_chain.step["planner"])).status_code == 403
    assert not ChainedGrant.objects.filter(revoked_at__isnull=False).exists()


def test_revoke_unknown_step_is_404(revoker):
    assert logged_in(revoker).get(reverse("admin:chain_grant_step_revoke", args=[uuid.uuid4()])).status_code == 404


# Session, user, permissions, the step, the subtree listing (loaded on POST too), then
# revoke_subtree: lock, the chain's joins, steps, its signed event (head, event, head),
# DOT grants, refresh tokens, access tokens; measured 18.
REVOKE_QUERIES = 20


def test_revoking_a_10000_step_subtree_takes_bounded_queries(revoker, app, alice, django_assert_max_num_queries):
    """build_chain(10_000) takes ~8 s on SQLite (one INSERT per step, as real hops do)."""
    root = build_chain(app, alice, 10_000)
    client = logged_in(revoker)
    with django_assert_max_num_queries(REVOKE_QUERIES):
        response = client.post(revoke_url(root), {"reason": "bulk"})
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Revoked 10000 steps."]
    assert not ChainedGrant.objects.filter(revoked_at__isnull=True).exists()
    assert integrity.verify_chain(root.pk).ok


def test_revoking_a_subtree_with_many_tokens_takes_bounded_queries(app, alice, django_assert_max_num_queries):
    size = 3000
    root = build_chain(app, alice, size)
    steps = list(ChainedGrant.objects.chain(root.pk))
    now = timezone.now()
    tokens = AccessToken.objects.bulk_create(
        AccessToken(
            user=alice,
            application=app,
            token="",
            scope="read",
            expires=now + timedelta(hours=1),
            token_checksum=hashlib.sha256(f"at{i}".encode()).hexdigest(),
        )
        for i in range(size)
    )
    families = [uuid.uuid4() for _ in steps]
    RefreshToken.objects.bulk_create(
        RefreshToken(
            user=alice,
            application=app,
            token="",
            access_token=token,
            token_family=family,
            token_checksum=hashlib.sha256(f"rt{i}".encode()).hexdigest(),
        )
        for i, (token, family) in enumerate(zip(tokens, families, strict=True))
    )
    for step, token, family in zip(steps, tokens, families, strict=True):
        step.access_token_id, step.token_family, step.exchanged_at = token.pk, family, now
    ChainedGrant.objects.bulk_update(steps, ["access_token_id", "token_family", "exchanged_at"], batch_size=500)
    with django_assert_max_num_queries(REVOKE_QUERIES):
        assert lifecycle.revoke_subtree(root, "bulk") == size
    assert not AccessToken.objects.exists()
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()


# --- agents -------------------------------------------------------------------------------

AGENTS = "/admin/chain_grant/agent/"
NO_INLINE_KEYS = {
    "keys-TOTAL_FORMS": "0",
    "keys-INITIAL_FORMS": "0",
    "keys-MIN_NUM_FORMS": "0",
    "keys-MAX_NUM_FORMS": "1000",
}


def agent_form(app, key_text: str, identifier="summariser", **extra) -> dict:
    return {
        "identifier": identifier,
        "name": "Summariser",
        "applications": [app.pk],
        "allowed_scopes": "openid read",
        "allowed_algorithms": ["ES256"],
        "is_active": "on",
        "new_keys": key_text,
        **NO_INLINE_KEYS,
        **extra,
    }


def form_errors(response) -> dict:
    assert response.status_code == 200, "expected the form again, with errors"
    return response.context["adminform"].form.errors


@pytest.fixture
def admin_su(superuser):
    return logged_in(superuser)


def test_add_agent_by_pasting_a_public_jwk(admin_su, app, flow, alice):
    key = generate_key("EC")
    public = key.export_public(as_dict=True)
    response = admin_su.post(AGENTS + "add/", agent_form(app, json.dumps(public)))
    assert response.status_code == 302, form_errors(response)
    agent = Agent.objects.get(identifier="summariser")
    assert list(agent.applications.all()) == [app]
    assert agent.allowed_scopes == "openid read" and agent.allowed_algorithms == ["ES256"] and agent.is_active
    [stored] = agent.keys.all()
    assert stored.is_active and stored.kid == key.thumbprint()
    assert stored.jwk == {**public, "kid": key.thumbprint()} and "d" not in stored.jwk

    # and it can hop right away, with that key
    code, _ = flow.authorize(alice)
    _, _, body = flow.advance(code, TestAgent("summariser", key, agent))
    assert body["scope"] == "openid read"


def test_add_agent_with_a_public_pem_or_jwks(admin_su, app):
    rsa = generate_key("RSA")
    pem = rsa.export_to_pem().decode()
    assert admin_su.post(AGENTS + "add/", agent_form(app, pem, identifier="pem-agent")).status_code == 302
    assert Agent.objects.get(identifier="pem-agent").keys.get().kid == rsa.thumbprint()
    jwks = json.dumps({"keys": [generate_key("EC").export_public(as_dict=True) for _ in range(2)]})
    assert admin_su.post(AGENTS + "add/", agent_form(app, jwks, identifier="jwks-agent")).status_code == 302
    assert Agent.objects.get(identifier="jwks-agent").keys.filter(is_active=True).count() == 2


@pytest.mark.parametrize(
    "kind", ["private-jwk", "private-jwks", "private-pem", "encrypted-pem", "symmetric", "garbage", "empty"]
)
def test_add_agent_refuses_private_or_bad_keys(admin_su, app, kind):
    ec = generate_key("EC")
    text = {
        "private-jwk": ec.export_private(),
        "private-jwks": json.dumps({"keys": [ec.export_public(as_dict=True), ec.export_private(as_dict=True)]}),
        "private-pem": ec.export_to_pem(private_key=True, password=None).decode(),
        "encrypted-pem": ec.export_to_pem(private_key=True, password=b"pw").decode(),
        "symmetric": json.dumps({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}),
        "garbage": "not a key",
        "empty": "",
    }[kind]
    errors = form_errors(admin_su.post(AGENTS + "add/", agent_form(app, text)))
    assert list(errors) == ["new_keys"]
    message = " ".join(errors["new_keys"])
    if kind.startswith(("private", "encrypted")):
        assert "private key" in message
    assert not Agent.objects.filter(identifier="summariser").exists()
    assert not AgentKey.objects.exists()
    if kind != "empty":
        assert "PRIVATE" not in message and '"d"' not in message  # the pasted secret is not echoed back


def change_form(agent, key_text: str = "", **extra) -> dict:
    keys = list(agent.keys.order_by("pk"))
    data = {
        "identifier": agent.identifier,
        "name": agent.name,
        "applications": [a.pk for a in agent.applications.all()],
        "allowed_scopes": agent.allowed_scopes,
        "allowed_algorithms": agent.allowed_algorithms,
        "new_keys": key_text,
        "keys-TOTAL_FORMS": str(len(keys)),
        "keys-INITIAL_FORMS": str(len(keys)),
        "keys-MIN_NUM_FORMS": "0",
        "keys-MAX_NUM_FORMS": "1000",
    }
    if agent.is_active:
        data["is_active"] = "on"
    for i, key in enumerate(keys):
        data.update({f"keys-{i}-id": str(key.pk), f"keys-{i}-agent": str(agent.pk)})
        if key.is_active:
            data[f"keys-{i}-is_active"] = "on"
    return {**data, **extra}


def test_change_agent_with_a_new_key_rotates(admin_su, planner, flow, alice):
    old = planner.model.keys.get()
    new_key = generate_key("EC")
    response = admin_su.post(
        f"{AGENTS}{planner.model.pk}/change/",
        change_form(planner.model, json.dumps(new_key.export_public(as_dict=True))),
    )
    assert response.status_code == 302, form_errors(response)
    assert "Keys rotated: 1 active, 1 disabled." in [str(m) for m in get_messages(response.wsgi_request)]
    old.refresh_from_db()
    assert not old.is_active and old.disabled_at is not None
    new = planner.model.keys.get(kid=new_key.thumbprint())
    assert new.is_active and new.disabled_at is None

    code, _ = flow.authorize(alice)
    refused = flow.hop(code, planner.proof(code))  # signed with the old key
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    planner.key = new_key
    flow.advance(code, planner)


def test_change_agent_without_a_key_keeps_its_keys(admin_su, planner):
    response = admin_su.post(f"{AGENTS}{planner.model.pk}/change/", change_form(planner.model, allowed_scopes="read"))
    assert response.status_code == 302, form_errors(response)
    planner.model.refresh_from_db()
    assert planner.model.allowed_scopes == "read"
    assert planner.model.keys.get().is_active


def test_change_agent_refuses_a_private_key(admin_su, planner):
    errors = form_errors(
        admin_su.post(f"{AGENTS}{planner.model.pk}/change/", change_form(planner.model, planner.key.export_private()))
    )
    assert "new_keys" in errors
    assert planner.model.keys.count() == 1 and planner.model.keys.get().is_active


def test_disabling_a_key_in_the_inline_records_when(admin_su, planner):
    key = planner.model.keys.get()
    data = change_form(planner.model)
    del data["keys-0-is_active"]
    assert admin_su.post(f"{AGENTS}{planner.model.pk}/change/", data).status_code == 302
    key.refresh_from_db()
    assert not key.is_active
    assert key.disabled_at is not None


def test_activate_and_deactivate_actions(admin_su, make_agent, flow, alice):
    a, b = make_agent("a-agent"), make_agent("b-agent")
    make_agent("c-agent")
    response = admin_su.post(
        AGENTS, {"action": "deactivate", "_selected_action": [a.model.pk, b.model.pk]}, follow=True
    )
    assert response.redirect_chain == [(AGENTS, 302)]
    assert [str(m) for m in response.context["messages"]] == ["2 agents deactivated."]
    assert dict(Agent.objects.values_list("identifier", "is_active")) == {
        "a-agent": False,
        "b-agent": False,
        "c-agent": True,
    }

    code, _ = flow.authorize(alice)
    assert flow.hop(code, a.proof(code)).json()["error"] == "invalid_grant"  # a deactivated agent cannot hop

    response = admin_su.post(AGENTS, {"action": "activate", "_selected_action": [a.model.pk]}, follow=True)
    assert [str(m) for m in response.context["messages"]] == ["1 agent activated."]
    assert Agent.objects.get(pk=a.model.pk).is_active
    flow.advance(code, a)


def test_agent_pages_render(admin_su, planner):
    listing = admin_su.get(AGENTS)
    assert listing.status_code == 200 and b"planner" in listing.content
    page = admin_su.get(f"{AGENTS}{planner.model.pk}/change/")
    assert page.status_code == 200
    assert planner.model.keys.get().kid in page.content.decode()
    assert planner.key.export_private(as_dict=True)["d"] not in page.content.decode()
    assert admin_su.get(AGENTS + "add/").status_code == 200


# --- odd data -----------------------------------------------------------------------------


def test_agent_controlled_claims_and_reasons_are_escaped(flow, alice, planner, revoker):
    """Proof claims come from the agent; the reason from staff: both are shown escaped."""
    code, _ = flow.authorize(alice)
    payload = "<script>alert(1)</script>"
    response = flow.hop(code, planner.proof(code, extra={"note": payload}))
    assert response.status_code == 200, response.content
    step = lifecycle.find_step(response.json()["authorization_code"])
    assert step.proof_claims["note"] == payload
    client = logged_in(revoker)
    client.post(revoke_url(step), {"reason": '"><img src=x onerror=alert(2)>'})
    for url in (tree_url(step.root_id), STEPS, CHAINS):
        html = client.get(url).content.decode()
        assert payload not in html and "<img src=x" not in html, url
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(tree_url(step.root_id)).content.decode()


ODD_PARAMS = [
    {"q": "a\x00b"},
    {"state": "\x00"},
    {"application__id__exact": "1\x00"},
    {"created__gte": "\x00"},
    {"agent__id__exact": "x"},
]


@pytest.mark.parametrize(
    ("url", "params"),
    [
        *[(url, params) for url in (CHAINS, STEPS) for params in ODD_PARAMS],
        *[(url, {"kind": "a\x00"}) for url in (CHAINS, STEPS)],
        (STEPS, {"agent": "x"}),
        (CHAINS, {"agent": "x"}),
        (CHAINS, {"agent": "1\x00"}),
    ],
)
def test_lists_never_500(admin_client, scene, url, params):
    assert admin_client.get(url, params).status_code in (200, 302, 400)


@pytest.mark.parametrize("count", [3, 30])
def test_list_query_counts_are_constant(app, alice, revoker, count, django_assert_max_num_queries):
    for i in range(count):
        build_chain(app, alice, 4, code_prefix=f"q{i}")
    client = logged_in(revoker)
    for url in (CHAINS, STEPS, CHAINS + "?state=live&kind=user", STEPS + "?q=alice"):
        # session, user, permissions, count(s), the page (every row joined), the
        # sidebar filters' choices (applications, agents), date hierarchy: 11 measured
        with django_assert_max_num_queries(12):
            response = client.get(url)
        assert response.status_code == 200


# --- the wallet step's rows ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/admin/chain_grant/walletrequest/?status__exact=%00",
        "/admin/chain_grant/walletrequest/?status=a%00b",
        "/admin/chain_grant/wallet/?thumbprint=%00",
    ],
)
def test_wallet_admin_filters_with_nul_are_a_400(url, admin_su):
    """Defect (crash, PostgreSQL): a NUL in a Wallet/WalletRequest changelist filter reached
    the database (DataError, an HTTP 500); the chain lists already answered 400."""
    assert admin_su.get(url).status_code == 400


def test_wallet_request_admin_shows_no_secret_digests(admin_su, wflow, wallet):
    pending = wflow.start()
    wallet.respond(pending.url, post=wflow.post)
    row = pending.refresh()
    html = admin_su.get(f"/admin/chain_grant/walletrequest/{row.pk}/change/").content.decode()
    for value in (row.poll_digest, row.response_code_digest, row.state, pending.poll):  # the nonce, spent, is evidence
        assert value not in html
