"""private_key_jwt (RFC 7523 §2.2, RFC 7521 §4.2): a client with registered keys
authenticates with a signed assertion at the token, introspection and revocation
endpoints; every failed check is invalid_client (401) and writes nothing; a key-only
client's secret is refused; discovery adds the method to DOT's."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from jwcrypto import jwk, jws

from chain_grant.client import CLIENT_ASSERTION_TYPE, client_assertion, generate_key, pkce_pair
from chain_grant.models import ChainClient, ChainedGrant, UsedJti
from tests.helpers import ISSUER, REDIRECT_URI, Flow

pytestmark = pytest.mark.django_db
TOKEN_URL = "http://testserver/oauth/token/"


@pytest.fixture
def client_key(app):
    key = generate_key("EC")
    ChainClient.objects.filter(application=app).update(client_jwks={"keys": [key.export_public(as_dict=True)]})
    return key


def assertion(key, app, **claims):
    overrides = {k: v for k, v in claims.items() if k not in ("alg", "kid", "typ", "drop")}
    token = client_assertion(key, client_id=app.client_id, aud=claims.pop("aud", ISSUER), extra=overrides)
    if "drop" in claims or "alg" in claims or "kid" in claims:
        header = json.loads(jws.base64url_decode(token.split(".")[0]))
        payload = json.loads(jws.base64url_decode(token.split(".")[1]))
        for name in claims.get("drop", ()):
            payload.pop(name, None)
        header.update({k: claims[k] for k in ("alg", "kid") if k in claims})
        signed = jws.JWS(json.dumps(payload).encode())
        signed.add_signature(
            key, alg=header["alg"] if header["alg"] in ("ES256", "RS256") else "ES256", protected=json.dumps(header)
        )
        token = signed.serialize(compact=True)
    return token


def token_request(data, **headers):
    return Client().post("/oauth/token/", data, **headers)


def exchange_body(code, verifier, client_assertion, **extra):
    """An authorization_code exchange authenticated by ``client_assertion``."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion,
        **extra,
    }


def exchange_with_assertion(flow, alice, app, key, *, claims=None, **extra):
    code, verifier = flow.authorize(alice, scope="openid read")
    data = exchange_body(code, verifier, assertion(key, app, **(claims or {})), **extra)
    return token_request({k: v for k, v in data.items() if v is not None})


def test_an_assertion_authenticates_the_token_request(flow, alice, app, client_key):
    response = exchange_with_assertion(flow, alice, app, client_key)
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "Bearer"
    assert UsedJti.objects.count() == 1


def test_the_token_endpoint_url_is_an_accepted_audience(flow, alice, app, client_key):
    assert exchange_with_assertion(flow, alice, app, client_key, claims={"aud": TOKEN_URL}).status_code == 200


def test_a_hop_is_authenticated_by_an_assertion(flow, alice, app, client_key, planner):
    code, _ = flow.authorize(alice, scope="openid read")
    _, challenge = pkce_pair()
    data = {
        "grant_type": "code_chain",
        "authorization_code": code,
        "id_token": planner.proof(code),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion(client_key, app),
    }
    response = token_request(data)
    assert response.status_code == 200, response.content
    assert ChainedGrant.objects.filter(kind="agent").count() == 1


def refused(response):
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "invalid_client"
    assert not ChainedGrant.objects.filter(exchanged_at__isnull=False).exists()


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "someone-else"},
        {"sub": "someone-else"},
        {"aud": "https://elsewhere.example/oauth"},
        {"exp": int(time.time()) - 120},
        {"exp": int(time.time()) + 3600},
        {"iat": int(time.time()) + 600, "exp": int(time.time()) + 660},
        {"nbf": int(time.time()) + 600},
        {"drop": ("exp",)},
        {"drop": ("jti",)},
        {"jti": ""},
        {"kid": "not-a-registered-kid"},
    ],
    ids=[
        "iss-not-client",
        "sub-not-client",
        "wrong-aud",
        "expired",
        "lifetime-too-long",
        "iat-in-future",
        "nbf-in-future",
        "no-exp",
        "no-jti",
        "empty-jti",
        "unknown-kid",
    ],
)
def test_each_assertion_rule_is_invalid_client(flow, alice, app, client_key, claims):
    refused(exchange_with_assertion(flow, alice, app, client_key, claims=claims))


def test_a_wrong_assertion_type_is_invalid_client(flow, alice, app, client_key):
    refused(exchange_with_assertion(flow, alice, app, client_key, client_assertion_type="urn:x"))


def test_an_assertion_signed_by_another_key_is_invalid_client(flow, alice, app, client_key):
    refused(exchange_with_assertion(flow, alice, app, generate_key("EC")))


def test_hs256_and_none_are_invalid_client(flow, alice, app, client_key):
    now = int(time.time())
    claims = {"iss": app.client_id, "sub": app.client_id, "aud": ISSUER, "exp": now + 60, "jti": "j1"}
    secret = jwk.JWK(kty="oct", k=jws.base64url_encode(b"s" * 32))
    signed = jws.JWS(json.dumps(claims).encode())
    signed.add_signature(secret, alg="HS256", protected=json.dumps({"alg": "HS256", "kid": client_key.thumbprint()}))
    for token in (
        signed.serialize(compact=True),
        jws.base64url_encode(json.dumps({"alg": "none"})) + "." + jws.base64url_encode(json.dumps(claims)) + ".",
    ):
        code, verifier = flow.authorize(alice, scope="openid read")
        refused(token_request(exchange_body(code, verifier, token)))


def test_a_reused_jti_is_invalid_client(flow, alice, app, client_key):
    token = assertion(client_key, app)
    for expected in (200, 401):
        code, verifier = flow.authorize(alice, scope="openid read")
        data = exchange_body(code, verifier, token)
        assert token_request(data).status_code == expected


def test_a_request_that_fails_still_spends_its_jti(flow, alice, app, client_key):
    """The jti is recorded in the request's transaction; an OAuth error (a response, not
    an exception) commits it, so the assertion cannot be tried again."""
    token = assertion(client_key, app)
    code, verifier = flow.authorize(alice, scope="openid read")
    failed = token_request(exchange_body(code, "x" * 43, token))  # a wrong PKCE verifier
    assert (failed.status_code, failed.json()["error"]) == (400, "invalid_grant")
    assert UsedJti.objects.count() == 1
    refused(token_request(exchange_body(code, verifier, token)))
    assert token_request(exchange_body(code, verifier, assertion(client_key, app))).status_code == 200


@pytest.mark.django_db(transaction=True)  # real commits, to count them
def test_the_jti_is_recorded_in_one_statement_inside_the_token_transaction(flow, alice, app, client_key):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    code, verifier = flow.authorize(alice, scope="openid read")
    with CaptureQueriesContext(connection) as queries:
        assert token_request(exchange_body(code, verifier, assertion(client_key, app))).status_code == 200
    statements = [q["sql"] for q in queries.captured_queries]
    inserts = [i for i, sql in enumerate(statements) if "usedjti" in sql.lower()]
    assert len(inserts) == 1 and "ON CONFLICT" in statements[inserts[0]]
    if connection.vendor == "sqlite":  # Django logs SQLite's BEGIN/COMMIT: one transaction, the jti in it
        begins = [i for i, sql in enumerate(statements) if sql.upper().startswith("BEGIN")]
        commits = [i for i, sql in enumerate(statements) if sql.upper().startswith("COMMIT")]
        assert len(begins) == len(commits) == 1 and begins[0] < inserts[0] < commits[0]


def test_an_assertion_with_a_secret_or_basic_auth_is_invalid_client(flow, alice, app, client_key):
    refused(exchange_with_assertion(flow, alice, app, client_key, client_secret="s3cret"))
    code, verifier = flow.authorize(alice, scope="openid read")
    data = exchange_body(code, verifier, assertion(client_key, app))
    refused(Client().post("/oauth/token/", data, **flow.auth()))


def test_a_client_id_other_than_the_assertions_is_invalid_client(flow, alice, app, client_key):
    refused(exchange_with_assertion(flow, alice, app, client_key, client_id="other-client"))


def test_a_client_without_keys_cannot_use_an_assertion(flow, alice, app):
    refused(exchange_with_assertion(flow, alice, app, generate_key("EC")))


def test_a_key_only_clients_secret_is_refused(flow, alice, app, client_key):
    ChainClient.objects.filter(application=app).update(token_endpoint_auth_method="private_key_jwt")
    code, verifier = flow.authorize(alice, scope="openid read")
    refused(flow.exchange(code, verifier))
    assert exchange_with_assertion(flow, alice, app, client_key).status_code == 200


def test_introspection_and_revocation_accept_an_assertion(flow, alice, app, client_key):
    token = exchange_with_assertion(flow, alice, app, client_key).json()["access_token"]
    body = {"token": token, "client_assertion_type": CLIENT_ASSERTION_TYPE}
    seen = Client().post(
        "/oauth/introspect/",
        {**body, "client_assertion": assertion(client_key, app, aud="http://testserver/oauth/introspect/")},
    )
    assert seen.status_code == 200 and seen.json()["active"] is True
    revoked = Client().post("/oauth/revoke_token/", {**body, "client_assertion": assertion(client_key, app)})
    assert revoked.status_code == 200
    assert flow.introspect(token)["active"] is False
    bad = Client().post("/oauth/introspect/", {**body, "client_assertion": assertion(generate_key("EC"), app)})
    assert bad.status_code == 401


def test_discovery_adds_private_key_jwt_to_dots_methods(client):
    for url in ("/oauth/.well-known/openid-configuration", "/.well-known/oauth-authorization-server/oauth"):
        response = client.get(url)
        if response.status_code == 404:
            continue
        data = response.json()
        methods = data["token_endpoint_auth_methods_supported"]
        assert "private_key_jwt" in methods and "client_secret_basic" in methods, data
        assert "ES256" in data["token_endpoint_auth_signing_alg_values_supported"]
        assert "HS256" not in data["token_endpoint_auth_signing_alg_values_supported"]


def test_flow_helper_still_works_with_a_secret(flow, alice):
    code, verifier = flow.authorize(alice, scope="openid read")
    assert flow.exchange(code, verifier).status_code == 200
    assert isinstance(Flow, type)


def test_the_keys_command_adds_rotates_and_lists(app, tmp_path, capsys):
    from django.core.management import CommandError, call_command

    first, second = generate_key("EC"), generate_key("OKP")
    for name, key in (("one.jwk", first), ("two.jwk", second)):
        (tmp_path / name).write_text(json.dumps(key.export_public(as_dict=True)))
    (tmp_path / "private.jwk").write_text(json.dumps(first.export(as_dict=True, private_key=True)))
    call_command("chain_grant_client", "keys", "add", app.client_id, "--key", str(tmp_path / "one.jwk"))
    call_command("chain_grant_client", "keys", "add", app.client_id, "--key", str(tmp_path / "two.jwk"), "--key-only")
    row = ChainClient.objects.get(application=app)
    assert [k["kid"] for k in row.client_jwks["keys"]] == [first.thumbprint(), second.thumbprint()]
    assert row.token_endpoint_auth_method == "private_key_jwt"
    with pytest.raises(CommandError, match="already has a key"):
        call_command("chain_grant_client", "keys", "add", app.client_id, "--key", str(tmp_path / "one.jwk"))
    with pytest.raises(CommandError, match="private key"):
        call_command("chain_grant_client", "keys", "add", app.client_id, "--key", str(tmp_path / "private.jwk"))
    call_command(
        "chain_grant_client", "keys", "rotate", app.client_id, "--key", str(tmp_path / "two.jwk"), "--secret-too"
    )
    row.refresh_from_db()
    assert [k["kid"] for k in row.client_jwks["keys"]] == [second.thumbprint()] and row.token_endpoint_auth_method == ""
    capsys.readouterr()
    call_command("chain_grant_client", "keys", "list", app.client_id)
    out = capsys.readouterr().out
    assert second.thumbprint() in out and first.thumbprint() not in out and "auth=secret+keys" in out


def test_expiry_purges_the_used_jtis_of_expired_assertions(flow, alice, app, client_key):
    from datetime import timedelta

    from django.utils import timezone

    from chain_grant.core import retention

    assert exchange_with_assertion(flow, alice, app, client_key).status_code == 200
    assert retention.expire_steps().used_jtis == 0  # still within the assertion's lifetime
    assert retention.expire_steps(now=timezone.now() + timedelta(hours=1)).used_jtis == 1
    assert not UsedJti.objects.exists()


def test_the_admin_keeps_public_keys_only(admin_client, app):
    key = generate_key("EC")
    row = ChainClient.objects.get(application=app)
    url = f"/admin/chain_grant/chainclient/{row.pk}/change/"
    form = {
        "application": app.pk,
        "code_chain_enabled": "on",
        "wallet_step": "on",
        "token_endpoint_auth_method": "private_key_jwt",
    }
    private = admin_client.post(
        url, {**form, "client_jwks": json.dumps({"keys": [key.export(as_dict=True, private_key=True)]})}
    )
    assert private.status_code == 200 and "private key" in private.content.decode()
    saved = admin_client.post(url, {**form, "client_jwks": json.dumps({"keys": [key.export_public(as_dict=True)]})})
    assert saved.status_code == 302
    row.refresh_from_db()
    assert row.client_jwks["keys"][0]["kid"] == key.thumbprint() and row.token_endpoint_auth_method == "private_key_jwt"


def test_an_aud_list_is_invalid_client(flow, alice, app, client_key):
    """draft-ietf-oauth-rfc7523bis: one audience, a string (no list an attacker can add to)."""
    refused(exchange_with_assertion(flow, alice, app, client_key, claims={"aud": [ISSUER, "https://evil.example"]}))
