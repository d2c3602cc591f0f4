"""The admin in a real browser: an admin logs in, opens a chain of the PoC's shape,
sees the tree, and revokes a subtree (headless Debian Chromium driven by Playwright's
sync API against pytest-django's live server).

The chain is built through real hops first (authorize, then code_chain with signed
agent proofs, via Django's test client):

    alice (user consent, root)
    └── planner
        ├── researcher ── merger ── critic ── writer   (writer's code exchanged)
        ├── security   ── merger                       (merger's code exchanged)
        └── implementer ── merger

The admin revokes the researcher's branch; the four steps under it show "revoked",
the six others are untouched, and the endpoints refuse the revoked codes; reloaded
after the endpoints exchanged and chained untouched codes, the page shows that too.

Screenshots (full page) go to test-artifacts/ at the repo root: the changelist, the
chain page before, the confirmation page and the chain page after (light, then dark). The browser is
never downloaded: without /usr/bin/chromium the test is skipped (.ci/run installs it).
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from oauth2_provider.models import get_access_token_model

from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant
from tests.helpers import error_of, screenshot

ADMIN_PASSWORD = "admin-pw-for-browser-tests"


def shoot(page, name: str):
    return screenshot(page, f"admin-{name}")


def build_poc_chain(flow, alice, make_agent):
    """The PoC's shape through the real endpoints. Returns {name: (code, verifier)}
    and the exchanged tokens."""
    planner = make_agent("planner", scopes="openid read write")
    researcher = make_agent("researcher", scopes="openid read")
    security = make_agent("security", scopes="openid read")
    implementer = make_agent("implementer", scopes="openid read write")
    merger = make_agent("merger", scopes="openid read write")
    critic = make_agent("critic", scopes="openid read")
    writer = make_agent("writer", scopes="openid read write")

    codes = {"root": flow.authorize(alice, scope="openid read write")}
    codes["planner"] = flow.advance(codes["root"][0], planner)[:2]
    for branch in (researcher, security, implementer):  # fan-out 3 = MAX_CHILDREN's default
        codes[branch.identifier] = flow.advance(codes["planner"][0], branch)[:2]
        codes[f"merger<{branch.identifier}"] = flow.advance(codes[branch.identifier][0], merger)[:2]
    codes["critic"] = flow.advance(codes["merger<researcher"][0], critic)[:2]
    codes["writer"] = flow.advance(codes["critic"][0], writer)[:2]  # stands in for the later user step

    tokens = {}
    for name in ("writer", "merger<security"):  # one token inside the revoked subtree, one outside
        response = flow.exchange(*codes[name])
        assert response.status_code == 200, response.content
        tokens[name] = response.json()["access_token"]
    # A refused hop from the planner: its fan-out is used up.
    assert error_of(flow.hop(codes["planner"][0], critic.proof(codes["planner"][0])))[0] == 400
    return codes, tokens, {"critic": critic, "security": security}


@pytest.mark.django_db(transaction=True)
def test_admin_reviews_and_revokes_a_subtree_in_a_browser(browser_page, live_server, flow, alice, make_agent):
    page = browser_page
    started = time.monotonic()
    codes, tokens, agents = build_poc_chain(flow, alice, make_agent)
    steps = {name: lifecycle.find_step(code) for name, (code, _) in codes.items()}
    root = steps["root"]
    assert {s.root_id for s in steps.values()} == {root.pk} and len(steps) == 10
    # Depth-first, children by creation: the order the tree page lists them in.
    tree_order = [
        "root",
        "planner",
        "researcher",
        "merger<researcher",
        "critic",
        "writer",
        "security",
        "merger<security",
        "implementer",
        "merger<implementer",
    ]
    actors = {name: "alice" if name == "root" else name.split("<")[0] for name in tree_order}
    revoked = ["researcher", "merger<researcher", "critic", "writer"]  # researcher's subtree
    untouched = [name for name in tree_order if name not in revoked]
    before = {name: steps[name].state for name in tree_order}
    assert before["writer"] == before["merger<security"] == "exchanged"
    assert {before[n] for n in tree_order if n not in ("writer", "merger<security")} == {"live"}
    built = time.monotonic()

    get_user_model().objects.create_superuser("admin", "admin@example.com", ADMIN_PASSWORD)
    base = live_server.url

    # --- log in through the admin's form -------------------------------------------------
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")

    # --- the Chains changelist: one chain, linked to its tree ---------------------------
    page.get_by_role("link", name="Chains", exact=True).first.click()
    page.wait_for_url(f"{base}/admin/chain_grant/chain/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "alice" in rows.first.inner_text()
    shoot(page, "1-changelist")

    # --- the chain page: the whole tree, indented, verified -----------------------------
    tree_url = f"{base}/admin/chain_grant/chain/{root.pk}/tree/"
    rows.first.locator("a[href$='/tree/']").click()
    page.wait_for_url(tree_url)
    items = page.locator("li.chain-step")
    assert items.count() == len(tree_order) == 10
    assert page.locator("li.chain-step .actor").all_inner_texts() == [actors[n] for n in tree_order]
    assert [items.nth(i).get_attribute("id") for i in range(10)] == [f"step-{steps[n].pk}" for n in tree_order]
    depths = [int(items.nth(i).get_attribute("data-depth")) for i in range(10)]
    assert depths == [steps[n].depth for n in tree_order] == [0, 1, 2, 3, 4, 5, 2, 3, 2, 3]
    lefts = [items.nth(i).bounding_box()["x"] for i in range(10)]
    for i in range(1, 10):  # indentation follows depth (28 px a level)
        assert lefts[i] - lefts[0] == pytest.approx(28 * depths[i], abs=1), (tree_order[i], lefts)
    for name in tree_order:
        assert page.locator(f"#step-{steps[name].pk} .badge.state").inner_text() == before[name]
    assert page.locator("#integrity .integrity-ok").is_visible()
    assert "Integrity verified" in page.locator("#integrity").inner_text()
    assert "10 steps' link_hash recomputed and matching" in page.locator("#integrity").inner_text()
    # Narrowed scopes show: researcher lost "write" under the planner.
    assert page.locator(f"#step-{steps['researcher'].pk} .scope-narrowed").all_inner_texts() == ["write"]
    assert page.locator("a.revoke-link").count() == 10  # superuser: may revoke, nothing revoked yet
    shoot(page, "2-chain-before")

    # --- revoke the researcher's branch: confirmation lists the subtree ------------------
    page.locator(f"#step-{steps['researcher'].pk} a.revoke-link").click()
    page.wait_for_url(f"{base}/admin/chain_grant/chain/revoke/{steps['researcher'].pk}/")
    listed = page.locator("#revoke-list li").all_inner_texts()
    assert len(listed) == len(revoked)
    for text, name in zip(listed, revoked, strict=True):  # ordered by depth: the subtree top-down
        assert f"· {actors[name]} ·" in text and text.endswith(before[name]), (text, name)
    intro = page.locator("#content-main > p").first.inner_text()
    assert "This revokes 4 steps" in intro and "(3 still live)" in intro and "(1 exchanged)" in intro
    assert page.locator("#confirm-revoke").is_visible()
    page.fill("#reason", "browser test: researcher branch compromised")
    shoot(page, "3-revoke-confirm")
    page.click("#confirm-revoke")

    # --- back on the chain page: the subtree is revoked, the rest untouched ---------------
    page.wait_for_url(tree_url)
    assert "Revoked 4 steps." in page.locator(".messagelist").inner_text()
    assert page.locator("li.chain-step").count() == 10
    for name in tree_order:
        state = page.locator(f"#step-{steps[name].pk} .badge.state").inner_text()
        assert state == ("revoked" if name in revoked else before[name]), name
        revoke_links = page.locator(f"#step-{steps[name].pk} a.revoke-link").count()
        assert revoke_links == (0 if name in revoked else 1), name
    meta = page.locator(f"#step-{steps['critic'].pk} .meta").inner_text()
    assert "browser test: researcher branch compromised (admin)" in meta
    assert "Integrity verified" in page.locator("#integrity").inner_text()  # revocation is not tampering
    shoot(page, "4-chain-after")
    page.emulate_media(color_scheme="dark")  # the admin follows the OS theme: the tree must stay readable
    shoot(page, "5-chain-after-dark")
    page.emulate_media(color_scheme="light")
    assert page.problems == [], page.problems
    browsed = time.monotonic()

    # --- the endpoints agree: revoked codes are refused, the rest still work -------------
    for name in tree_order:
        step = ChainedGrant.objects.get(pk=steps[name].pk)
        assert (step.revoked_at is not None) == (name in revoked), name
        assert step.state == ("revoked" if name in revoked else before[name]), name
    critic = agents["critic"]
    for name in ("researcher", "merger<researcher"):  # code_chain from a revoked step
        code = codes[name][0]
        assert error_of(flow.hop(code, critic.proof(code))) == (400, "invalid_grant"), name
    for name in ("researcher", "critic"):  # exchanging a revoked code
        assert error_of(flow.exchange(*codes[name])) == (400, "invalid_grant"), name
    assert flow.introspect(tokens["writer"])["active"] is False  # token issued in the subtree: gone
    assert flow.introspect(tokens["merger<security"])["active"] is True  # outside it: kept
    assert get_access_token_model().objects.count() == 1
    # Untouched live codes still hop and exchange.
    hop = flow.hop(codes["merger<implementer"][0], critic.proof(codes["merger<implementer"][0]))
    assert hop.status_code == 200, hop.content
    assert flow.exchange(*codes["security"]).status_code == 200

    # --- the page agrees with the endpoints: reloaded, it shows what they just did --------
    page.goto(tree_url)
    shown = {name: page.locator(f"#step-{steps[name].pk} .badge.state").inner_text() for name in tree_order}
    assert [name for name in tree_order if shown[name] == "revoked"] == revoked
    assert {name: shown[name] for name in untouched} == {
        "root": "live",
        "planner": "live",
        "security": "exchanged",  # just now, at the token endpoint
        "merger<security": "exchanged",
        "implementer": "live",
        "merger<implementer": "live",  # it just had a child; its own code is still live
    }
    child = lifecycle.find_step(hop.json()["authorization_code"])
    assert page.locator("li.chain-step").count() == 11  # the hop's new step is on the page
    assert page.locator("li.chain-step").last.get_attribute("id") == f"step-{child.pk}"  # under merger<implementer
    assert page.locator(f"#step-{child.pk} .actor").inner_text() == "critic"
    assert page.locator(f"#step-{child.pk}").get_attribute("data-depth") == "4"
    assert page.problems == [], page.problems
    print(
        f"\nbrowser admin test: chain built via endpoints {built - started:.2f}s, "
        f"browser {browsed - built:.2f}s, endpoint checks {time.monotonic() - browsed:.2f}s"
    )
