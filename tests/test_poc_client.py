"""Clients written against Boruta's proof of concept, unchanged (its request shapes,
byte for byte as its CodeChainTokenClient and browser URLs send them), advance a chain in
PoC-compatibility mode: CHAIN_GRANT["RELAXED_PROOFS"] *and* the client's
ChainClient.poc_compatible switch. Strict mode (the default) refuses every one of them.

PoC mode, per client:
* PKCE optional (the PoC sends none, at authorize or at the token endpoint);
* the self-asserted ``jwk`` header names the machine account by its thumbprint
  (did:jwk), whatever ``sub`` says; ``sub`` ("<agent>-key") is kept as the account's label;
* a proof may live an hour (the PoC signs exp = iat + 3600);
* the browser URLs' ``prompt=login``, empty ``scope=`` and ``client_metadata={}`` work.
"""

import json
import time
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from jwcrypto import jwk, jws

from chain_grant.client.jose import did_jwk
from chain_grant.client.wallet import HeadlessWallet, request_url_from_html
from chain_grant.core import policy
from chain_grant.models import Agent, ChainClient, ChainedGrant
from tests.helpers import REDIRECT_URI, SECRET, Flow, WalletFlow, consent_form, error_of

pytestmark = pytest.mark.django_db

AGENTS = ("planner", "researcher", "writer")


def poc_id_token(name: str, key: jwk.JWK, now: int | None = None) -> str:
    """The PoC's machine id_token: RS512, typ JWT, kid "<agent>-key", its public jwk; claims
    sub "<agent>-key", iat, exp = iat + 3600; no aud, no jti, no c_hash."""
    now = int(time.time()) if now is None else now
    header = {"alg": "RS512", "typ": "JWT", "kid": f"{name}-key", "jwk": key.export_public(as_dict=True)}
    token = jws.JWS(json.dumps({"sub": f"{name}-key", "iat": now, "exp": now + 3600}).encode())
    token.add_signature(key, alg="RS512", protected=json.dumps(header))
    return token.serialize(compact=True)


def poc_hop(client, app, code: str, id_token: str):
    """The PoC's CodeChainTokenClient: client_id + client_secret in the body, no PKCE."""
    body = {
        "client_id": app.client_id,
        "client_secret": SECRET,
        "grant_type": "code_chain",
        "authorization_code": code,
        "id_token": id_token,
    }
    return client.post("/oauth/token", body)  # the PoC's path, no trailing slash


def poc_browser_url(app, **params) -> str:
    query = {"client_id": app.client_id, "redirect_uri": REDIRECT_URI, **params, "state": "agent-chat"}
    return "/oauth/authorize?" + urlencode(query)


@pytest.fixture
def keys():
    return {name: jwk.JWK.generate(kty="RSA", size=2048) for name in AGENTS}


@pytest.fixture
def poc_mode(chain_settings, app):
    chain_settings(RELAXED_PROOFS=True)
    policy.configure_client(app, poc_compatible=True)


def wallet_root_code(client, app) -> str:
    """The PoC's first browser URL: response_type=id_token&prompt=login&scope=&client_metadata={}."""
    page = client.get(poc_browser_url(app, response_type="id_token", prompt="login", scope="", client_metadata="{}"))
    assert page.status_code == 200, page.content[:400]
    wflow = WalletFlow(client, app)
    redirect = HeadlessWallet.generate().respond(request_url_from_html(page.content.decode()), post=wflow.post)
    landing = client.get(redirect)
    assert landing.status_code == 302, landing.content[:400]
    query = parse_qs(urlparse(landing["Location"]).query)
    assert query["state"] == ["agent-chat"], query
    return query["code"][0]


def test_the_pocs_requests_advance_a_chain_in_poc_mode(client, app, alice, keys, poc_mode):
    root = wallet_root_code(client, app)
    code = root
    for name in ("planner", "researcher"):
        response = poc_hop(client, app, code, poc_id_token(name, keys[name]))
        assert response.status_code == 200, response.content
        code = response.json()["authorization_code"]

    # The person's step, as the PoC's second browser URL (no PKCE, prompt=login).
    url = poc_browser_url(app, response_type="code", prompt="login", scope="email", code=code)
    client.force_login(alice)
    to_login = client.get(url)
    assert to_login.status_code == 302 and urlparse(to_login["Location"]).path == "/accounts/login/"
    next_url = parse_qs(urlparse(to_login["Location"]).query)["next"][0]
    assert client.get(next_url).status_code == 200  # the consent page
    landing = client.post(next_url, consent_form(next_url))
    assert landing.status_code == 302, landing.content[:300]
    code = parse_qs(urlparse(landing["Location"]).query)["code"][0]

    response = poc_hop(client, app, code, poc_id_token("writer", keys["writer"]))
    assert response.status_code == 200, response.content
    writer_code = response.json()["authorization_code"]
    token = client.post(
        "/oauth/token",
        {
            "client_id": app.client_id,
            "client_secret": SECRET,
            "grant_type": "authorization_code",
            "code": writer_code,
            "redirect_uri": REDIRECT_URI,
        },
    )
    assert token.status_code == 200, token.content
    assert token.json()["scope"] == "email"

    # Each key is one machine account, named by its thumbprint; sub is its label.
    for name in AGENTS:
        account = Agent.objects.get(identifier=did_jwk(keys[name].export_public(as_dict=True)))
        assert account.self_asserted and f"{name}-key" in account.name
    kinds = list(ChainedGrant.objects.order_by("depth").values_list("kind", flat=True))
    assert len(kinds) == 5 and kinds[0] == "wallet" and kinds[3] == "user"


def test_the_same_key_under_another_sub_is_the_same_account(client, app, alice, keys, poc_mode):
    root = wallet_root_code(client, app)
    first = poc_hop(client, app, root, poc_id_token("planner", keys["planner"]))
    renamed = poc_hop(client, app, first.json()["authorization_code"], poc_id_token("impostor", keys["planner"]))
    assert renamed.status_code == 200, renamed.content
    assert Agent.objects.filter(self_asserted=True).count() == 1


def test_poc_mode_still_checks_the_signature_and_the_hour(client, app, keys, poc_mode):
    root = wallet_root_code(client, app)
    token = poc_id_token("planner", keys["planner"])
    header, payload, signature = token.split(".")
    tampered = ".".join((header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")))
    assert error_of(poc_hop(client, app, root, tampered)) == (400, "invalid_grant")
    stale = poc_id_token("planner", keys["planner"], now=int(time.time()) - 3700)
    assert error_of(poc_hop(client, app, root, stale)) == (400, "invalid_grant")
    assert poc_hop(client, app, root, token).status_code == 200


@pytest.mark.parametrize("mode", ["strict (default)", "relaxed, client not PoC", "PoC client, not relaxed"])
def test_strict_mode_refuses_every_poc_shape(mode, client, app, alice, keys, chain_settings):
    chain_settings(RELAXED_PROOFS=mode == "relaxed, client not PoC")
    policy.configure_client(app, poc_compatible=mode == "PoC client, not relaxed")
    # the browser URLs without PKCE: refused as DOT refuses them (PKCE_REQUIRED)
    page = client.get(poc_browser_url(app, response_type="id_token", prompt="login", scope="", client_metadata="{}"))
    assert page.status_code == 302 and "error=invalid_request" in page["Location"]
    # a hop without PKCE, with the PoC's proof, on a code from a strict chain
    flow = Flow(client, app)
    root, _ = flow.authorize(alice, scope="openid email")
    refused = poc_hop(client, app, root, poc_id_token("planner", keys["planner"]))
    assert error_of(refused)[0] == 400
    assert not Agent.objects.filter(self_asserted=True).exists()
    assert ChainClient.objects.get(application=app).poc_compatible == (mode == "PoC client, not relaxed")
