"""The README's curl sequence (scripts/curl_chain.sh) advances a chain on a live server."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from chain_grant.models import ChainedGrant

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.django_db(transaction=True)
def test_readme_curl_sequence(live_server, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("bootstrap_demo", stdout=io.StringIO())
    env = {**os.environ, "IDP": live_server.url, "IDP_VAR_DIR": str(tmp_path), "PY": sys.executable}
    result = subprocess.run(
        ["bash", str(REPO / "scripts/curl_chain.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    introspection = json.loads(result.stdout.split("\nintrospection: ", 1)[1].splitlines()[0])
    assert introspection["active"] and introspection["act"] == {"sub": "planner"}
    assert introspection["username"] == "alice" and introspection["chain_depth"] == 1
    step = ChainedGrant.objects.get(subject="planner")
    assert step.message_digest and step.exchanged_at and step.parent.kind == "user"
    assert 'authorization_code": "…"' in result.stdout  # the script never prints a code
    exchanged = json.loads(result.stdout.split("token exchange response: ", 1)[1].splitlines()[0])
    assert exchanged["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert exchanged["access_token"] == "…" and exchanged["scope"] == "read"  # never printed
    seen = json.loads(result.stdout.split("exchanged introspection: ", 1)[1].splitlines()[0])
    assert seen["active"] and seen["act"] == {"sub": "researcher", "act": {"sub": "planner"}}
    assert seen["chain_id"] == introspection["chain_id"] and seen["chain_depth"] == 2
    researcher = ChainedGrant.objects.get(subject="researcher")
    assert researcher.parent == step and researcher.actor["via"] == "token_exchange" and researcher.message_digest
