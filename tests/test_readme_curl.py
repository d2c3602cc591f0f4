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
    introspection = json.loads(result.stdout.split("introspection: ", 1)[1])
    assert introspection["active"] and introspection["act"] == {"sub": "planner"}
    assert introspection["username"] == "alice" and introspection["chain_depth"] == 1
    step = ChainedGrant.objects.get(subject="planner")
    assert step.message_digest and step.exchanged_at and step.parent.kind == "user"
    assert 'authorization_code": "…"' in result.stdout  # the script never prints a code
