"""One test per rule of the code_chain grant (docs/architecture.md): each refusal is the right
OAuth error JSON with the right status, and writes nothing (no step, no DOT grant,
no agent, no change to the parent)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from oauth2_provider.models import get_application_model, get_grant_model

from chain_grant.client import pkce_pair, sign_proof
from chain_grant.core import lifecycle, proofs
from chain_grant.core.codes import code_digest
from chain_grant.models import Agent, AgentKey, ChainClient, ChainedGrant
from chain_grant.oauth.grant import SINGLE_PARAMS
from tests.helpers import FORM, ISSUER, assert_error, b64, b64url_decode, basic_auth, proof_claims, signed

pytestmark = pytest.mark.django_db
Grant = get_grant_model()


@pytest.fixture
def ctx(flow, alice, make_agent):
    """A chain with one live agent step to hang requests on, and a second agent."""
    ctx = type("Ctx", (), {})()
    ctx.planner = make_agent("planner")
    ctx.researcher = make_agent("researcher", scopes="openid read")
    root_code, _ = flow.authorize(alice, scope="openid read write")
    ctx.code, ctx.verifier, _ = flow.advance(root_code, ctx.planner)  # parent for the requests
    ctx.step = lifecycle.find_step(ctx.code)
    return ctx


def snapshot():
    return (
        ChainedGrant.objects.count(),
        Grant.objects.count(),
        Agent.objects.count(),
        AgentKey.objects.count(),
        list(ChainedGrant.objects.values_list("children_count", flat=True)),
    )


def hop(flow, ctx, proof=None, agent=None, **extra):
    agent = agent or ctx.researcher
    return flow.hop(extra.pop("code", ctx.code), proof if proof is not None else agent.proof(ctx.code), **extra)


def forged_hs256(ctx):
    """HS256 'signed' with the agent's public key as the HMAC secret (key confusion)."""
    public_pem = ctx.researcher.key.export_to_pem(private_key=False, password=None)
    header = b64({"alg": "HS256", "kid": ctx.researcher.key["kid"]})
    payload = b64(proof_claims(ctx.researcher, ctx.code))
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def tampered(ctx):
    header, payload, sig = ctx.researcher.proof(ctx.code).split(".")
    claims = json.loads(b64url_decode(payload))
    claims["scope_hint"] = "admin"
    return f"{header}.{b64(claims)}.{sig}"


def duplicated(flow, ctx, extra: str):
    """A request that would succeed, but for one parameter sent twice (RFC 6749 §3.1)."""
    _, challenge = pkce_pair()
    body = (
        urlencode(
            {
                "grant_type": "code_chain",
                "authorization_code": ctx.code,
                "scope": "read",
                "id_token": ctx.researcher.proof(ctx.code),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        + "&"
        + extra
    )
    return flow.client.post("/oauth/token", body, content_type=FORM, **flow.auth())


def use_jti_once(flow, ctx):
    ctx.claims = proof_claims(ctx.researcher, ctx.code, jti="same-jti")
    assert hop(flow, ctx, signed(ctx.researcher, ctx.claims)).status_code == 200


def disable_agent(ctx):
    Agent.objects.filter(pk=ctx.researcher.model.pk).update(is_active=False)


def disable_key(ctx):
    AgentKey.objects.filter(agent=ctx.researcher.model).update(is_active=False)


def unregister_for_client(ctx):
    ctx.researcher.model.applications.clear()


def register_for_another_client(ctx, other):
    ctx.other = other
    ctx.researcher.model.applications.add(other)


def expire_parent(ctx):
    ChainedGrant.objects.filter(pk=ctx.step.pk).update(expires=timezone.now() - timedelta(seconds=1))


def revoke_parent(ctx):
    lifecycle.revoke_subtree(ctx.step, "test")


def exchange_parent(flow, ctx):
    assert flow.exchange(ctx.code, ctx.verifier).status_code == 200


# name: (request(flow, ctx, make_app) -> response, status, error, description[, prepare(flow, ctx, make_app)])
#
# ``description`` is a fragment the response's error_description must contain, so a case
# cannot pass for another reason than its own (a proof helper that broke the signature
# would otherwise make "expired proof" or "wrong aud" pass too). None: oauthlib's own
# answer, which has no error_description at all.
UNKNOWN_CODE = "The authorization code is unknown, expired or was issued to another client."
NOT_AN_AGENT = "Proof sub is not an active agent registered for this client."
NOT_ITS_KID = "Proof key id (kid) is not one of the agent's active keys."
CASES = {
    # -- request ----------------------------------------------------------------------
    "missing authorization_code": (
        lambda f, c, m: f.client.post(
            "/oauth/token", {"grant_type": "code_chain", "id_token": c.researcher.proof(c.code)}, **f.auth()
        ),
        400,
        "invalid_request",
        "Missing authorization_code parameter.",
    ),
    "missing id_token": (
        lambda f, c, m: f.client.post(
            "/oauth/token", {"grant_type": "code_chain", "authorization_code": c.code}, **f.auth()
        ),
        400,
        "invalid_request",
        "Missing id_token parameter.",
    ),
    "duplicate authorization_code": (
        lambda f, c, m: duplicated(f, c, f"authorization_code={c.code}"),
        400,
        "invalid_request",
        "Duplicate authorization_code parameter.",
    ),
    "duplicate scope": (
        lambda f, c, m: duplicated(f, c, "scope=read"),
        400,
        "invalid_request",
        "Duplicate scope parameter.",
    ),
    "missing code_challenge (PKCE required)": (
        lambda f, c, m: hop(f, c, pkce=False),
        400,
        "invalid_request",
        "Code challenge required.",
    ),
    "plain code_challenge_method": (
        lambda f, c, m: hop(f, c, code_challenge="x" * 43, code_challenge_method="plain"),
        400,
        "invalid_request",
        'Unsupported "plain" code_challenge_method',
    ),
    "scope beyond the parent's": (
        lambda f, c, m: hop(f, c, agent=c.planner, proof=c.planner.proof(c.code), scope="read email"),
        400,
        "invalid_scope",
        "Requested scope exceeds the previous step's scope or the agent's allowed scopes: email",
    ),
    "scope beyond the agent's allowed scopes": (
        lambda f, c, m: hop(f, c, scope="read write"),
        400,
        "invalid_scope",
        "Requested scope exceeds the previous step's scope or the agent's allowed scopes: write",
    ),
    "client secret wrong": (
        lambda f, c, m: f.client.post(
            "/oauth/token",
            {"grant_type": "code_chain", "authorization_code": c.code, "id_token": c.researcher.proof(c.code)},
            HTTP_AUTHORIZATION=basic_auth(f.app.client_id, "wrong"),
        ),
        401,
        "invalid_client",
        None,
    ),
    "client not enabled for code_chain": (
        lambda f, c, m: hop(f, c),
        400,
        "unauthorized_client",
        None,
        lambda f, c, m: ChainClient.objects.update(code_chain_enabled=False),
    ),
    "client_credentials-only client": (
        lambda f, c, m: f.hop(c.code, c.researcher.proof(c.code), app=c.other),
        400,
        "unauthorized_client",
        None,
        lambda f, c, m: setattr(
            c, "other", m("cc-client", authorization_grant_type=get_application_model().GRANT_CLIENT_CREDENTIALS)
        ),
    ),
    # -- parent code ------------------------------------------------------------------
    "unknown code": (
        lambda f, c, m: hop(f, c, code="no-such-code", proof=c.researcher.proof("no-such-code")),
        400,
        "invalid_grant",
        UNKNOWN_CODE,
    ),
    "expired code": (lambda f, c, m: hop(f, c), 400, "invalid_grant", UNKNOWN_CODE, lambda f, c, m: expire_parent(c)),
    "revoked code": (
        lambda f, c, m: hop(f, c),
        400,
        "invalid_grant",
        "The authorization code was revoked.",
        lambda f, c, m: revoke_parent(c),
    ),
    "exchanged code": (
        lambda f, c, m: hop(f, c),
        400,
        "invalid_grant",
        "The authorization code was already exchanged.",
        lambda f, c, m: exchange_parent(f, c),
    ),
    "another client's code": (  # the agent is registered for both clients: only the code is wrong
        lambda f, c, m: f.hop(c.code, c.researcher.proof(c.code), app=c.other),
        400,
        "invalid_grant",
        UNKNOWN_CODE,
        lambda f, c, m: register_for_another_client(c, m("other-client")),
    ),
    # -- proof ------------------------------------------------------------------------
    "alg none": (
        lambda f, c, m: hop(f, c, proof=f"{b64({'alg': 'none'})}.{b64(proof_claims(c.researcher, c.code))}."),
        400,
        "invalid_grant",
        "Proof algorithm 'none' is not allowed.",
    ),
    "HS256 keyed with the public key": (
        lambda f, c, m: hop(f, c, proof=forged_hs256(c)),
        400,
        "invalid_grant",
        "Proof algorithm 'HS256' is not allowed.",
    ),
    "unknown kid": (
        lambda f, c, m: hop(f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code), {"kid": "nope"})),
        400,
        "invalid_grant",
        NOT_ITS_KID,
    ),
    "another agent's key": (
        lambda f, c, m: hop(
            f,
            c,
            proof=signed(
                c.researcher, proof_claims(c.researcher, c.code), {"kid": c.researcher.key["kid"]}, key=c.planner.key
            ),
        ),
        400,
        "invalid_grant",
        "Proof signature is invalid.",
    ),
    "another agent's key and kid": (
        lambda f, c, m: hop(f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code), key=c.planner.key)),
        400,
        "invalid_grant",
        NOT_ITS_KID,
    ),
    "inactive agent": (lambda f, c, m: hop(f, c), 400, "invalid_grant", NOT_AN_AGENT, lambda f, c, m: disable_agent(c)),
    "disabled key": (lambda f, c, m: hop(f, c), 400, "invalid_grant", NOT_AN_AGENT, lambda f, c, m: disable_key(c)),
    "agent not registered for this client": (
        lambda f, c, m: hop(f, c),
        400,
        "invalid_grant",
        NOT_AN_AGENT,
        lambda f, c, m: unregister_for_client(c),
    ),
    "bad signature": (
        lambda f, c, m: hop(f, c, proof=tampered(c)),
        400,
        "invalid_grant",
        "Proof signature is invalid.",
    ),
    "expired proof": (
        lambda f, c, m: hop(
            f,
            c,
            proof=signed(
                c.researcher,
                proof_claims(c.researcher, c.code, iat=int(time.time()) - 200, exp=int(time.time()) - 100),
            ),
        ),
        400,
        "invalid_grant",
        "Proof has expired (exp).",
    ),
    "iat in the future": (
        lambda f, c, m: hop(
            f,
            c,
            proof=signed(
                c.researcher,
                proof_claims(c.researcher, c.code, iat=int(time.time()) + 120, exp=int(time.time()) + 180),
            ),
        ),
        400,
        "invalid_grant",
        "Proof was issued in the future (iat).",
    ),
    "lifetime too long": (
        lambda f, c, m: hop(
            f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code, exp=int(time.time()) + 3600))
        ),
        400,
        "invalid_grant",
        "Proof lifetime (exp - iat) is too long.",
    ),
    "wrong aud": (
        lambda f, c, m: hop(
            f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code, aud="https://evil.example"))
        ),
        400,
        "invalid_grant",
        "Proof audience (aud) is not this issuer.",
    ),
    "missing aud": (
        lambda f, c, m: hop(f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code, aud=None))),
        400,
        "invalid_grant",
        "Proof audience (aud) is not this issuer.",
    ),
    "missing jti": (
        lambda f, c, m: hop(f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code, jti=None))),
        400,
        "invalid_grant",
        "Proof jti is missing or invalid.",
    ),
    "reused jti": (
        lambda f, c, m: hop(f, c, signed(c.researcher, {**c.claims, "iat": c.claims["iat"] - 1})),
        400,
        "invalid_grant",
        "Proof jti was already used.",
        lambda f, c, m: use_jti_once(f, c),
    ),
    "wrong c_hash": (
        lambda f, c, m: hop(
            f,
            c,
            proof=signed(c.researcher, proof_claims(c.researcher, c.code, c_hash=proofs.code_hash("another-code"))),
        ),
        400,
        "invalid_grant",
        "Proof c_hash does not match the authorization code.",
    ),
    "missing c_hash": (
        lambda f, c, m: hop(f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code, c_hash=None))),
        400,
        "invalid_grant",
        "Proof c_hash does not match the authorization code.",
    ),
    "sub is not the signer": (  # planner's kid is looked for, the researcher's kid is not among them
        lambda f, c, m: hop(f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code, sub="planner"))),
        400,
        "invalid_grant",
        NOT_ITS_KID,
    ),
    "oversized proof": (
        lambda f, c, m: hop(f, c, proof=signed(c.researcher, proof_claims(c.researcher, c.code, pad="x" * 9000))),
        400,
        "invalid_request",
        "Proof is too large.",
    ),
    "not base64": (
        lambda f, c, m: hop(f, c, proof="not!base64.at@all.sig"),
        400,
        "invalid_request",
        "Proof is not a compact JWS.",
    ),
    "not JSON": (
        lambda f, c, m: hop(f, c, proof=f"{b64(b'{nope')}.{b64(b'[]')}.c2ln"),
        400,
        "invalid_request",
        "Proof is not valid base64url JSON.",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused(case, flow, ctx, make_app):
    request, status, error, description, *prepare = CASES[case]
    for step in prepare:
        step(flow, ctx, make_app)
    before = snapshot()
    response = request(flow, ctx, make_app)
    body = assert_error(response, status, error, description)
    if description is None:  # oauthlib gives none; the backend adds RFC 6749's standard one
        assert body["error_description"], body
    assert snapshot() == before, "a refused request wrote rows"


def test_fan_out_limit(flow, ctx, chain_settings, make_agent):
    chain_settings(MAX_CHILDREN=2)
    writer = make_agent("writer", scopes="read")
    assert hop(flow, ctx).status_code == 200
    assert hop(flow, ctx, agent=writer, proof=writer.proof(ctx.code)).status_code == 200
    before = snapshot()
    assert_error(hop(flow, ctx), 400, "invalid_grant", "fan-out")
    assert snapshot() == before


def test_depth_limit(flow, ctx, chain_settings):
    chain_settings(MAX_DEPTH=2)
    code, _, body = flow.advance(ctx.code, ctx.researcher)
    assert body["depth"] == 2
    before = snapshot()
    assert_error(flow.hop(code, ctx.researcher.proof(code)), 400, "invalid_grant", "depth")
    assert snapshot() == before


def test_expired_dot_code_never_starts_a_chain(flow, alice, make_agent):
    planner = make_agent("planner")
    root_code, _ = flow.authorize(alice)
    Grant.objects.filter(code=code_digest(root_code)).update(expires=timezone.now() - timedelta(seconds=1))
    assert_error(flow.hop(root_code, planner.proof(root_code)), 400, "invalid_grant", UNKNOWN_CODE)
    assert not ChainedGrant.objects.exists()


def test_proof_for_another_code_is_refused(flow, ctx, alice):
    """c_hash binds the proof to the exact hand-off: a proof made for one code
    cannot be replayed against a sibling code."""
    other_code, _ = flow.authorize(alice)
    response = flow.hop(ctx.code, ctx.researcher.proof(other_code))
    assert_error(response, 400, "invalid_grant", "Proof c_hash does not match the authorization code.")


def test_message_digest_is_kept_as_evidence(flow, ctx):
    proof = sign_proof(ctx.researcher.key, sub="researcher", aud=ISSUER, code=ctx.code, message="hi")
    response = flow.hop(ctx.code, proof)
    assert response.status_code == 200
    step = lifecycle.find_step(response.json()["authorization_code"])
    assert step.message_digest == hashlib.sha256(b"hi").hexdigest()
    assert step.proof_claims["sub"] == "researcher" and step.proof_jti == step.proof_claims["jti"]
    assert step.proof_digest == hashlib.sha256(proof.encode()).hexdigest()


@pytest.mark.parametrize("code", ["nul\x00byte", "é" * 10, "x" * 300])
def test_implausible_codes_are_invalid_grant_not_500(flow, ctx, code):
    assert_error(flow.hop(code, ctx.researcher.proof(code)), 400, "invalid_grant", UNKNOWN_CODE)
    assert assert_error(flow.exchange(code, "v" * 43), 400, "invalid_grant")["error"] == "invalid_grant"  # DOT's


@pytest.mark.parametrize("param", SINGLE_PARAMS)
def test_duplicate_parameters_are_invalid_request(param, flow, alice, planner):
    """Rule (RFC 6749 §3.1): a code_chain parameter sent twice is invalid_request, not
    silently "last value wins"; nothing is chained."""
    code, verifier = flow.authorize(alice, scope="openid read")
    fields = {
        "grant_type": "code_chain",
        "client_id": flow.app.client_id,
        "authorization_code": code,
        "id_token": planner.proof(code),
        "scope": "openid read",
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
        "code_verifier": verifier,
    }
    other = {
        "authorization_code": "bogus",
        "id_token": planner.proof(code),
        "scope": "openid",
        "code_challenge": pkce_pair()[1],
    }.get(param, fields.get(param, "bogus"))  # same value is a duplicate too
    # The real value comes last; a join's parameters (not in this hop) are sent twice.
    twice = [] if param in fields else [(param, other)]
    body = "&".join(f"{k}={v}" for k, v in [(param, other), *fields.items(), *twice])
    response = flow.client.post("/oauth/token", body, content_type=FORM, **flow.auth())
    assert_error(response, 400, "invalid_request", f"Duplicate {param} parameter.")
    assert not ChainedGrant.objects.exists()

    single = "&".join(f"{k}={v}" for k, v in fields.items())  # without the duplicate, the same request works
    assert flow.client.post("/oauth/token", single, content_type=FORM, **flow.auth()).status_code == 200
