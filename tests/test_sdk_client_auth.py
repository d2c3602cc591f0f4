"""The SDK's client authentication against a live server (urllib, as an agent calls it):
``PrivateKeyJWT`` where the secret goes, for a hop and an exchange (a fresh assertion
per request, aud = the issuer or the endpoint's URL); a key-only client's secret refused;
the secret still working for a client that accepts it; ``python -m chain_grant.client
assertion`` for curl users."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from chain_grant.client import (
    CLIENT_ASSERTION_TYPE,
    ChainClientError,
    PrivateKeyJWT,
    code_chain,
    exchange_code,
    generate_key,
    pkce_pair,
    sign_proof,
)
from chain_grant.client.jose import b64url_decode
from chain_grant.core import client_auth
from chain_grant.models import ChainedGrant, UsedJti
from tests.helpers import REDIRECT_URI, SECRET

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def idp(live_server):
    """The live server's discovery: (issuer, token endpoint, introspection endpoint)."""
    with urllib.request.urlopen(f"{live_server.url}/oauth/.well-known/openid-configuration", timeout=30) as response:
        meta = json.load(response)
    return meta["issuer"], meta["token_endpoint"], meta["introspection_endpoint"]


@pytest.fixture
def client_key(app):
    """The client's key pair, its public key registered key-only (its secret refused)."""
    key = generate_key("EC")
    client_auth.register_keys(app, json.dumps(key.export_public(as_dict=True)), key_only=True)
    return key


def claims_of(assertion: str) -> dict:
    return json.loads(b64url_decode(assertion.split(".")[1]))


def hop(idp, app, auth, code, agent, **kwargs):
    issuer, token_url, _ = idp
    verifier, challenge = pkce_pair()
    proof = sign_proof(agent.key, sub=agent.identifier, aud=issuer, code=code)
    body = code_chain(token_url, app.client_id, auth, code, proof, code_challenge=challenge, **kwargs)
    return body, verifier


def test_a_hop_and_an_exchange_with_private_key_jwt(idp, flow, alice, app, client_key, planner, make_agent):
    issuer, token_url, introspect_url = idp
    auth = PrivateKeyJWT(client_key, app.client_id, issuer)
    root, _ = flow.authorize(alice, scope="openid read write")

    first, _ = hop(idp, app, auth, root, planner)
    assert first["depth"] == 1 and first["scope"] == "openid read write"
    coder = make_agent("coder", scopes="openid read")
    second, verifier = hop(idp, app, auth, first["authorization_code"], coder)
    assert second["depth"] == 2 and second["chain_id"] == first["chain_id"]

    token = exchange_code(
        token_url, app.client_id, auth, second["authorization_code"], redirect_uri=REDIRECT_URI, code_verifier=verifier
    )
    assert token["token_type"] == "Bearer" and token["scope"] == "openid read"
    step = ChainedGrant.objects.get(subject="coder")
    assert step.exchanged_at and step.access_token_id and step.parent.subject == "planner"
    assert UsedJti.objects.count() == 3  # one assertion per request, each jti used once

    # Introspection authenticates the same way (no SDK helper: one assertion, by hand).
    form = {"token": token["access_token"], **auth.form_fields(introspect_url)}
    request = urllib.request.Request(introspect_url, urllib.parse.urlencode(form).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        seen = json.load(response)
    assert seen["active"] and seen["act"] == {"sub": "coder", "act": {"sub": "planner"}}


def test_each_request_gets_a_fresh_assertion(idp, app, client_key):
    issuer, token_url, _ = idp
    auth = PrivateKeyJWT(client_key, app.client_id, issuer, lifetime=30)
    one, two = (claims_of(auth.form_fields(token_url)["client_assertion"]) for _ in range(2))
    assert one["jti"] != two["jti"]
    assert one["iss"] == one["sub"] == app.client_id and one["aud"] == issuer
    assert one["exp"] - one["iat"] == 30
    assert auth.form_fields(token_url)["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert client_key.export(as_dict=True, private_key=True)["d"] not in repr(auth)  # never the key


def test_without_an_audience_the_endpoint_url_is_the_aud(idp, flow, alice, app, client_key, planner):
    _, token_url, _ = idp
    auth = PrivateKeyJWT(client_key, app.client_id)  # aud: the URL each request is posted to
    assert claims_of(auth.assertion(token_url))["aud"] == token_url
    root, _ = flow.authorize(alice)
    body, verifier = hop(idp, app, auth, root, planner)
    token = exchange_code(
        token_url, app.client_id, auth, body["authorization_code"], redirect_uri=REDIRECT_URI, code_verifier=verifier
    )
    assert token["access_token"]


def test_a_key_only_clients_secret_is_refused_and_another_key_too(idp, flow, alice, app, client_key, planner):
    issuer, _, _ = idp
    root, _ = flow.authorize(alice)
    for auth in (SECRET, PrivateKeyJWT(generate_key("EC"), app.client_id, issuer)):
        with pytest.raises(ChainClientError) as refused:
            hop(idp, app, auth, root, planner)
        assert refused.value.status == 401 and refused.value.error == "invalid_client"
    assert not ChainedGrant.objects.filter(kind="agent").exists()
    body, _ = hop(idp, app, PrivateKeyJWT(client_key, app.client_id, issuer), root, planner)
    assert body["depth"] == 1


def test_the_secret_still_works_for_a_client_that_accepts_it(idp, flow, alice, app, planner):
    """Backward compatible: ``client_secret`` as a string (HTTP Basic), keys or not."""
    _, token_url, _ = idp
    key = generate_key("OKP")
    client_auth.register_keys(app, json.dumps(key.export_public(as_dict=True)))  # secret + keys
    root, _ = flow.authorize(alice)
    by_secret, verifier = hop(idp, app, SECRET, root, planner)
    by_key, _ = hop(idp, app, PrivateKeyJWT(key, app.client_id), root, planner)  # EdDSA, aud = the URL
    assert by_secret["depth"] == by_key["depth"] == 1
    token = exchange_code(
        token_url,
        app.client_id,
        SECRET,
        by_secret["authorization_code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert token["access_token"] and UsedJti.objects.count() == 1


def test_a_private_key_jwt_for_another_client_or_a_public_key_is_refused_before_sending(app, client_key):
    auth = PrivateKeyJWT(client_key, "another-client")
    with pytest.raises(ValueError, match="another-client"):
        code_chain("http://127.0.0.1:9/oauth/token/", app.client_id, auth, "code", "proof")  # port 9: never reached
    public = generate_key("EC")
    public = type(public).from_json(public.export_public())
    with pytest.raises(ValueError, match="private key"):
        PrivateKeyJWT(public, app.client_id)


def test_the_command_line_prints_an_assertion_curl_can_post(idp, flow, alice, app, client_key, planner, tmp_path):
    issuer, token_url, _ = idp
    key_file = tmp_path / "client.json"
    key_file.write_text(client_key.export(private_key=True))
    command = [sys.executable, "-m", "chain_grant.client", "assertion", "--key", str(key_file)]
    command += ["--client-id", app.client_id, "--aud", issuer]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assertion = result.stdout.strip()
    assert claims_of(assertion)["sub"] == app.client_id

    root, _ = flow.authorize(alice)
    _, challenge = pkce_pair()
    form = {
        "grant_type": "code_chain",
        "authorization_code": root,
        "id_token": planner.proof(root, aud=issuer),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    request = urllib.request.Request(token_url, urllib.parse.urlencode(form).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.load(response)["depth"] == 1


def test_dpop_through_the_sdk_binds_the_code_and_retries_with_the_servers_nonce(
    idp, flow, alice, app, client_key, make_agent, live_server, chain_settings
):
    """``DPoPKey`` as ``dpop=``: the hop's code is bound to it, the exchange returns a DPoP
    token, the answers API takes it with ``headers()``; with server nonces on, the first
    request is refused with use_dpop_nonce and sent once more with the nonce."""
    from chain_grant.client import DPoPKey

    chain_settings(DPOP_NONCE_SECONDS=300)
    issuer, token_url, _ = idp
    auth, dpop = PrivateKeyJWT(client_key, app.client_id, issuer), DPoPKey(generate_key("EC"))
    writer_agent = make_agent("writer", scopes="openid email")
    root, _ = flow.authorize(alice, scope="openid email")
    body, verifier = hop(idp, app, auth, root, writer_agent, dpop=dpop)
    assert dpop.nonce  # learnt from the first answer (use_dpop_nonce), then used
    assert ChainedGrant.objects.get(subject="writer").dpop_jkt == dpop.jkt
    with pytest.raises(ChainClientError) as refused:  # the code without the key
        exchange_code(
            token_url,
            app.client_id,
            auth,
            body["authorization_code"],
            redirect_uri=REDIRECT_URI,
            code_verifier=verifier,
        )
    assert refused.value.error == "invalid_dpop_proof"
    token = exchange_code(
        token_url,
        app.client_id,
        auth,
        body["authorization_code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
        dpop=dpop,
    )
    assert token["token_type"] == "DPoP"
    url = f"{live_server.url}/api/answers/"
    request = urllib.request.Request(
        url,
        json.dumps({"text": "hi"}).encode(),
        {**dpop.headers(token["access_token"], "POST", url), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
