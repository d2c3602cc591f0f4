"""The wallets that answer the wallet step, given a request an attacker may have written
(pasted, or linked with #request=): the demo web wallet (/wallet/, on the IdP's origin,
in a real browser) and chain_grant.client.wallet.HeadlessWallet post over HTTP(S) only,
and the demo wallet follows only an http(s) link of its verifier; both still answer
their verifier."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest

from tests.helpers import ISSUER, wallet_landing

EVIL_LINK = "javascript:document.title='pwned'"


def _demo_request(base: str, response_uri: str) -> str:
    return "openid://?" + urlencode(
        {
            "response_type": "id_token",
            "response_mode": "direct_post",
            "client_id": base + "/oauth",
            "response_uri": response_uri,
            "nonce": "n" * 43,
            "state": "s" * 43,
        }
    )


@pytest.mark.parametrize("case", ["data: response_uri", "javascript: redirect_uri", "redirect_uri to another site"])
@pytest.mark.django_db(transaction=True)
def test_demo_wallet_posts_over_http_and_follows_only_http_links_of_its_verifier(case, browser_page, live_server):
    """Defect (high, XSS): the demo wallet (/wallet/, on the IdP's origin) posted to any
    response_uri of a pasted or #request= linked request and made whatever redirect_uri
    came back a link: a data: response_uri "answering" {"redirect_uri": "javascript:…"}
    ran script on the IdP's origin (sessions, CSRF tokens, consent pages) after two
    clicks, with no server needed."""
    page, base = browser_page, live_server.url
    if case == "data: response_uri":
        response_uri = "data:application/json," + quote(json.dumps({"redirect_uri": EVIL_LINK}))
    else:  # an endpoint that answers with a javascript: link or a link to another site
        response_uri = base + "/oauth/wallet/elsewhere"
        link = EVIL_LINK if case == "javascript: redirect_uri" else "https://elsewhere.example/landing"
        page.route(
            response_uri,
            lambda route: route.fulfill(
                status=200, content_type="application/json", body=json.dumps({"redirect_uri": link})
            ),
        )
    page.goto(f"{base}/wallet/#request=" + quote(_demo_request(base, response_uri), safe=""))
    page.wait_for_function("document.getElementById('wallet-did').textContent.startsWith('did:jwk:')")
    page.click("#wallet-present")
    page.wait_for_function("document.getElementById('wallet-result').textContent !== ''")

    assert page.locator("#wallet-continue").count() == 0, page.locator("#wallet-continue").get_attribute("href")
    assert page.locator("#wallet-result").get_attribute("class") == "cg-bad"
    assert page.title() != "pwned"


@pytest.mark.parametrize(
    "response_uri",
    [
        "file:///etc/passwd",
        "ftp://testserver/x",
        "data:application/json,{}",
        "javascript:alert(1)",
        "http:///no-host",
        "http://[::1",
    ],
)
def test_headless_wallet_posts_over_http_only(response_uri, wallet):
    """The same rule for chain_grant.wallet.HeadlessWallet (scripts, the example): a
    request's response_uri never reaches urllib's file://, ftp:// or data: handlers."""
    posted = []
    url = "openid://?" + urlencode(
        {
            "response_type": "id_token",
            "response_mode": "direct_post",
            "client_id": ISSUER,
            "response_uri": response_uri,
            "nonce": "n" * 43,
            "state": "s" * 43,
        }
    )
    with pytest.raises(ValueError, match="response_uri"):
        wallet.respond(url, post=lambda uri, data: (posted.append(uri), (200, {"redirect_uri": uri}))[1])
    assert posted == []


@pytest.mark.django_db
def test_headless_wallet_still_answers_its_verifier(wflow, wallet):
    pending = wflow.start()
    wallet_landing(wflow.client.get(wallet.respond(pending.url, post=wflow.post)))
