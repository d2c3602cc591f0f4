"""The agent SDK (chain_grant.client) runs where the server's packages are absent:
Django, DOT, DRF and Celery made unimportable in a fresh interpreter. The import
contract in pyproject.toml forbids those imports statically; this runs the code."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_PACKAGES = ("django", "oauth2_provider", "rest_framework", "celery", "oauthlib")

BLOCK = (
    f"BLOCKED = {SERVER_PACKAGES!r}\n"
    + r"""
import importlib.abc, sys


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, Block())
"""
)

SDK = r"""
import json, sys

import chain_grant.client
import chain_grant.client.wallet
import chain_grant.client.__main__  # the command line (python -m chain_grant.client)
from chain_grant.client import CLIENT_ASSERTION_TYPE, PrivateKeyJWT, generate_key, pkce_pair, sign_proof
from chain_grant.client.jose import b64url_decode
from chain_grant.client.wallet import HeadlessWallet
from jwcrypto import jws

def claims_of(token, key):
    signed = jws.JWS()
    signed.deserialize(token, key)  # raises if the signature does not verify
    return json.loads(b64url_decode(token.split(".")[1]))

key = generate_key("EC")
proof = sign_proof(key, sub="agent-1", aud="https://idp.example", code="previous-code", message="hello")
verifier, challenge = pkce_pair()
wallet = HeadlessWallet.generate()
client_fields = PrivateKeyJWT(key, "client-1", "https://idp.example").form_fields("https://idp.example/token")
assert client_fields["client_assertion_type"] == CLIENT_ASSERTION_TYPE
id_token = wallet.id_token({"client_id": "https://rp.example/cb", "nonce": "n-1"})
print(json.dumps({
    "proof_claims": claims_of(proof, key),
    "verifier": verifier,
    "challenge": challenge,
    "did": wallet.did,
    "id_token_claims": claims_of(id_token, wallet.key),
    "client_assertion_claims": claims_of(client_fields["client_assertion"], key),
    "modules": sorted(sys.modules),
}))
"""

PACKAGE_ROOT = r"""
import json, sys

before = set(sys.modules)
import chain_grant

print(json.dumps({"new": sorted(set(sys.modules) - before), "version": chain_grant.__version__}))
"""


def run(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONSTARTUP")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_blocker_blocks():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK + "import django"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "blocked by the test" in result.stderr


def test_sdk_signs_a_proof_pkce_a_wallet_and_a_client_assertion_without_the_server_packages():
    out = run(BLOCK + SDK)

    claims = out["proof_claims"]
    assert claims["sub"] == claims["iss"] == "agent-1"
    assert claims["aud"] == "https://idp.example"
    assert claims["c_hash"] and claims["msg_sha256"]
    assert claims["exp"] > claims["iat"]

    assert 43 <= len(out["verifier"]) <= 128
    digest = hashlib.sha256(out["verifier"].encode()).digest()
    assert out["challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()  # S256

    assert out["did"].startswith("did:jwk:")
    assert out["id_token_claims"]["sub"] == out["did"]
    assert out["id_token_claims"]["nonce"] == "n-1"

    assertion = out["client_assertion_claims"]  # private_key_jwt (RFC 7523)
    assert assertion["iss"] == assertion["sub"] == "client-1" and assertion["aud"] == "https://idp.example"
    assert assertion["jti"] and assertion["exp"] > assertion["iat"]

    loaded = {name.partition(".")[0] for name in out["modules"]}
    assert not loaded & set(SERVER_PACKAGES)


def test_the_package_root_imports_nothing_heavy():
    """``import chain_grant`` (which every ``chain_grant.client`` import runs first)
    loads chain_grant/__init__.py and nothing else: no Django, no submodule."""
    out = run(PACKAGE_ROOT)
    assert out["new"] == ["chain_grant"]
    assert out["version"]
