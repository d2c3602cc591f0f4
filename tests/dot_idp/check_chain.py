"""chain_grant in Corp's IdP, plugged in as the README says (``after`` only): a clean
``check``, the everyday commands, a chain through Corp's validator and policies, the
wallet step for the one client enabled for it, and the review API with its schema.

tests/test_dot_idp.py runs this with --ds=tests.dot_idp.after.settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command

from chain_grant.client.keys import load_private_key, sign_proof
from chain_grant.client.pkce import pkce_pair
from chain_grant.client.wallet import HeadlessWallet, request_url_from_html

from .check_e2e import authorize_url, basic
from .conftest import REDIRECTS

pytestmark = pytest.mark.django_db
ISSUER = "http://testserver/o"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def planner(clients, tmp_path):
    """Corp enables its web app and registers a planner agent with the commands."""
    call_command("chain_grant_client", "enable", "webapp", "--wallet")
    private, public = tmp_path / "planner.key.pem", tmp_path / "planner.pub.jwk"
    call_command("chain_grant_agent", "keygen", "planner", "--private", str(private), "--public", str(public))
    call_command(
        "chain_grant_agent",
        "add",
        "planner",
        "--key",
        str(public),
        "--application",
        "webapp",
        "--scopes",
        "openid profile email read",
    )
    return load_private_key(str(private))


def hop(client, key, code, scope=None):
    verifier, challenge = pkce_pair()
    data = {
        "grant_type": "code_chain",
        "authorization_code": code,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "id_token": sign_proof(key, sub="planner", aud=ISSUER, code=code),
    }
    if scope:
        data["scope"] = scope
    return client.post("/o/token/", data, **basic("webapp")), verifier


def test_the_readme_lines_leave_check_clean():
    """``manage.py check`` in a process of its own (pytest's log capture handlers aside)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.dot_idp.after.settings"}
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "System check identified no issues" in result.stdout, (
        result.stdout + result.stderr
    )


def test_a_chain_through_corps_validator(client, clients, alice, planner):
    verifier, challenge = pkce_pair()
    client.force_login(alice)
    url = authorize_url(
        "webapp",
        response_type="code",
        scope="openid profile email read",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    code = parse_qs(urlsplit(client.get(url)["Location"]).query)["code"][0]
    client.logout()
    response, hop_verifier = hop(client, planner, code, scope="openid email read")
    assert response.status_code == 200, response.content
    chained = response.json()["authorization_code"]
    token = client.post(
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": chained,
            "redirect_uri": REDIRECTS["webapp"],
            "code_verifier": hop_verifier,
        },
        **basic("webapp"),
    ).json()
    assert token["scope"] == "openid email read"
    seen = client.post("/o/introspect/", {"token": token["access_token"]}, **basic("webapp")).json()
    assert seen["act"]["sub"] and seen["chain_depth"] == 1
    info = client.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {token['access_token']}").json()
    assert info["email"] == "alice@corp.example"  # Corp's claims, from Corp's validator
    documents = client.get("/documents/", HTTP_AUTHORIZATION=f"Bearer {token['access_token']}")
    assert documents.json()["for"] == "alice"


def test_corps_scope_policy_applies_to_a_hop(client, clients, alice, planner):
    verifier, challenge = pkce_pair()
    client.force_login(alice)
    url = authorize_url(
        "webapp", response_type="code", scope="openid read", code_challenge=challenge, code_challenge_method="S256"
    )
    code = parse_qs(urlsplit(client.get(url)["Location"]).query)["code"][0]
    response, _ = hop(client, planner, code, scope="openid admin")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_wallet_step_for_the_enabled_client_only(client, clients, planner):
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "id_token",
        "scope": "openid read",
        "client_metadata": "{}",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = client.get(authorize_url("webapp", **params))
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    wallet = HeadlessWallet.generate()

    def post(url, data):
        answer = client.post(urlsplit(url).path, data)
        return answer.status_code, answer.json()

    redirect = wallet.respond(request_url_from_html(page.content.decode()), post=post)
    landing = client.get(redirect)
    query = parse_qs(urlsplit(landing["Location"]).query)
    assert landing["Location"].startswith(REDIRECTS["webapp"]) and query["state"] == ["st"]
    token = client.post(
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECTS["webapp"],
            "code_verifier": verifier,
        },
        **basic("webapp"),
    )
    assert token.status_code == 200 and token.json()["scope"] == "openid read"
    refused = client.get(authorize_url("webapp", **{**params, "scope": "openid admin"}))
    assert parse_qs(urlsplit(refused["Location"]).query)["error"] == ["invalid_scope"]  # Corp's policy


def test_the_review_api_and_its_reference(client, clients, alice, planner, django_user_model):
    auditor = django_user_model.objects.create_user("audit", is_staff=True)
    client.force_login(alice)
    verifier, challenge = pkce_pair()
    url = authorize_url(
        "webapp", response_type="code", scope="openid read", code_challenge=challenge, code_challenge_method="S256"
    )
    code = parse_qs(urlsplit(client.get(url)["Location"]).query)["code"][0]
    assert hop(client, planner, code)[0].status_code == 200
    client.logout()
    # an auditor's token for chains:read, from Corp's own code flow (the scope is in Corp's SCOPES)
    client.force_login(auditor)
    verifier, challenge = pkce_pair()
    url = authorize_url(
        "webapp", response_type="code", scope="chains:read", code_challenge=challenge, code_challenge_method="S256"
    )
    audit_code = parse_qs(urlsplit(client.get(url)["Location"]).query)["code"][0]
    client.logout()
    token = client.post(
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": audit_code,
            "redirect_uri": REDIRECTS["webapp"],
            "code_verifier": verifier,
        },
        **basic("webapp"),
    ).json()["access_token"]
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    chains = client.get("/api/chains/", **bearer)
    assert chains.status_code == 200 and chains.json()["count"] >= 1
    missing = client.get("/api/chains/00000000-0000-0000-0000-000000000000/", **bearer)
    assert missing.status_code == 404 and set(missing.json()) == {"error", "error_description"}
    assert client.get("/api/chains/").status_code == 401
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200 and "/api/chains/" in json.loads(schema.content)["paths"]
    assert client.get("/api/docs/").status_code == 200


def test_discovery_adds_code_chain_to_dots_list(client):
    data = client.get("/o/.well-known/openid-configuration").json()
    assert "code_chain" in data["grant_types_supported"] and "implicit" in data["grant_types_supported"]
    assert data["token_endpoint"] == "http://testserver/o/token/"
