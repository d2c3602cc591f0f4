"""Everyday tasks without a shell one-liner: switching clients on and off
(chain_grant_client), making an agent key pair (chain_grant_agent keygen), and what
chain_grant_agent add refuses (scopes the IdP does not define, a key of another agent)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from jwcrypto import jwk
from oauth2_provider.models import get_application_model

from chain_grant.core.policy import client_may_chain, poc_client, wallet_step_client
from chain_grant.models import Agent, AgentKey, ChainClient, ChainedGrant
from tests.helpers import Flow

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def run(command, *args) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- chain_grant_client -----------------------------------------------------------------


def test_enable_list_disable_a_client(make_app, chain_settings):
    app = make_app("plain-rp", enabled=False)
    assert not client_may_chain(app)
    assert run("chain_grant_client", "enable", "plain-rp").split() == ["plain-rp", "chains=on", "wallet=on", "poc=off"]
    assert client_may_chain(app) and wallet_step_client(app)
    assert "wallet=off" in run("chain_grant_client", "enable", "plain-rp", "--no-wallet")
    assert client_may_chain(app) and not wallet_step_client(app)
    assert "wallet=off" in run("chain_grant_client", "enable", "plain-rp")  # switches not given are kept
    chain_settings(RELAXED_PROOFS=True)
    assert "poc=on" in run("chain_grant_client", "enable", "plain-rp", "--poc")
    assert poc_client(app)
    listing = run("chain_grant_client", "list").splitlines()
    assert listing == ["plain-rp\tchains=on\twallet=off\tpoc=on"]
    assert run("chain_grant_client", "disable", "plain-rp").split()[1] == "chains=off"
    assert not client_may_chain(app) and ChainClient.objects.get(application=app).code_chain_enabled is False


def test_disabling_a_client_applies_on_disable(flow, alice, planner):
    code, _ = flow.authorize(alice, scope="openid read")
    hop = flow.hop(code, planner.proof(code))
    run("chain_grant_client", "disable", flow.app.client_id)
    assert ChainedGrant.objects.revoked().count() == 2  # ON_DISABLE="revoke": its chains
    assert flow.exchange(hop.json()["authorization_code"], hop.verifier).status_code == 400


def test_list_shows_clients_without_a_row(make_app):
    make_app("no-row", enabled=False)
    assert run("chain_grant_client", "list").splitlines() == ["no-row\tchains=off"]


def test_enable_refuses_unknown_and_non_code_clients(make_app):
    with pytest.raises(CommandError, match="No application"):
        run("chain_grant_client", "enable", "nobody")
    Application = get_application_model()
    make_app("machine", enabled=False, authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    with pytest.raises(CommandError, match="authorization-code"):
        run("chain_grant_client", "enable", "machine")
    assert not ChainClient.objects.filter(application__client_id="machine").exists()


# --- chain_grant_agent keygen -------------------------------------------------------------


def add_planner(app):
    """chain_grant_agent add planner with the public JWK keygen wrote (planner.pub.jwk)."""
    run(
        "chain_grant_agent",
        "add",
        "planner",
        "--key",
        "planner.pub.jwk",
        "--application",
        app.client_id,
        "--scopes",
        "openid read",
    )


def test_keygen_writes_a_private_pem_0600_and_prints_the_public_jwk(tmp_path, monkeypatch, app):
    monkeypatch.chdir(tmp_path)
    out = run("chain_grant_agent", "keygen", "planner")
    private = tmp_path / "planner.key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = jwk.JWK.from_pem(private.read_bytes())
    assert key.has_private
    public = json.loads(out)
    assert "d" not in public and public["kty"] == "EC" and public["kid"] == key.thumbprint()
    assert jwk.JWK(**public).thumbprint() == key.thumbprint()
    # the public JWK registers; the PEM signs proofs with the SDK's CLI
    (tmp_path / "planner.pub.jwk").write_text(out)
    add_planner(app)
    assert Agent.objects.get(identifier="planner").keys.get().kid == key.thumbprint()


def test_keygen_never_overwrites_and_writes_the_public_key_to_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "planner.key.pem").write_text("an existing key")
    with pytest.raises(CommandError, match="Cannot create"):
        run("chain_grant_agent", "keygen", "planner")
    assert (tmp_path / "planner.key.pem").read_text() == "an existing key"
    out = run("chain_grant_agent", "keygen", "planner", "--kty", "OKP", "--private", "p2.pem", "--public", "p2.jwk")
    assert out == "" and json.loads((tmp_path / "p2.jwk").read_text())["crv"] == "Ed25519"
    assert stat.S_IMODE((tmp_path / "p2.pem").stat().st_mode) == 0o600


def test_a_keygen_pem_signs_a_proof_that_hops(tmp_path, monkeypatch, client, app, alice):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "planner.pub.jwk").write_text(run("chain_grant_agent", "keygen", "planner", "--kty", "RSA"))
    add_planner(app)
    flow = Flow(client, app)
    code, _ = flow.authorize(alice, scope="openid read")
    proof = subprocess.run(
        [sys.executable, "-m", "chain_grant.client", "proof", "--key", "planner.key.pem", "--sub", "planner",
         "--aud", "http://testserver/oauth", "--code", code],
        capture_output=True, text=True, check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.strip()  # fmt: skip
    assert flow.hop(code, proof).status_code == 200


# --- chain_grant_agent add refuses ----------------------------------------------------------


def test_add_refuses_scopes_the_idp_does_not_define(tmp_path, app):
    (tmp_path / "k.jwk").write_text(jwk.JWK.generate(kty="EC", crv="P-256").export_public())
    with pytest.raises(CommandError, match="unknown scope.*teleport"):
        run(
            "chain_grant_agent",
            "add",
            "planner",
            "--key",
            str(tmp_path / "k.jwk"),
            "--application",
            app.client_id,
            "--scopes",
            "openid teleport",
        )
    assert not Agent.objects.exists()


def test_add_refuses_a_key_registered_to_another_agent(tmp_path, app):
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    (tmp_path / "k.jwk").write_text(key.export_public())
    renamed = {**key.export_public(as_dict=True), "kid": "another-kid"}  # the same key under another kid
    (tmp_path / "k2.jwk").write_text(json.dumps(renamed))
    args = ("--application", app.client_id, "--scopes", "openid read")
    run("chain_grant_agent", "add", "planner", "--key", str(tmp_path / "k.jwk"), *args)
    for path in ("k.jwk", "k2.jwk"):
        with pytest.raises(CommandError, match="already registered to agent 'planner'"):
            run("chain_grant_agent", "add", "mallory", "--key", str(tmp_path / path), *args)
    with pytest.raises(CommandError, match="already registered"):
        run("chain_grant_agent", "add", "mallory", "--key", str(tmp_path / "k.jwk"), *args)
    assert not Agent.objects.filter(identifier="mallory").exists()
    run("chain_grant_agent", "add", "other", "--key", _new_key_file(tmp_path), *args)
    with pytest.raises(CommandError, match="already registered"):
        run("chain_grant_agent", "rotate", "other", "--key", str(tmp_path / "k.jwk"))
    assert AgentKey.objects.count() == 2
    # the agent that holds it may add it again (idempotent)
    run("chain_grant_agent", "add", "planner", "--key", str(tmp_path / "k.jwk"), *args)


def _new_key_file(tmp_path) -> str:
    path = tmp_path / "new.jwk"
    path.write_text(jwk.JWK.generate(kty="EC", crv="P-256").export_public())
    return str(path)
