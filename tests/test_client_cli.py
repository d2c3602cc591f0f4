"""``python -m chain_grant.client proof|pkce`` (scripts/curl_chain.sh and the README use
it in a subprocess) and the deprecated ``chain_grant.wallet`` alias, in-process."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from jwcrypto import jws

from chain_grant.client import __main__ as cli
from chain_grant.client import generate_key
from chain_grant.client.jose import code_hash, sha256_hex


def test_pkce_prints_a_verifier_and_its_s256_challenge(capsys):
    assert cli.main(["pkce"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    digest = hashlib.sha256(lines["CODE_VERIFIER"].encode()).digest()
    assert lines["CODE_CHALLENGE"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_proof_prints_a_signed_hop_proof(tmp_path, capsys):
    key = generate_key("EC")
    path = tmp_path / "agent.json"
    path.write_text(key.export_private())
    argv = ["proof", "--key", str(path), "--sub", "planner", "--aud", "https://idp.example/oauth"]
    assert cli.main([*argv, "--code", "previous-code", "--message", "hi"]) == 0
    token = jws.JWS()
    token.deserialize(capsys.readouterr().out.strip(), key)  # verifies the signature
    claims = json.loads(token.payload)
    assert claims["sub"] == "planner" and claims["aud"] == "https://idp.example/oauth"
    assert claims["c_hash"] == code_hash("previous-code")
    assert claims["msg_sha256"] == sha256_hex("hi")


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit):
        cli.main([])


def test_the_deprecated_wallet_module_is_the_sdk_wallet():
    from chain_grant import wallet
    from chain_grant.client import wallet as sdk_wallet

    assert wallet.HeadlessWallet is sdk_wallet.HeadlessWallet
    assert wallet.parse_request_url is sdk_wallet.parse_request_url
