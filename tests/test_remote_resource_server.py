"""A remote resource server enforces a chain requirement through introspection: a second
Django process (tests/remote_rs/: the README's ten lines, no chain_grant models) in front
of the live IdP, asking "the writer, after the planner, at most three steps deep, with a
person's consent within one hop, scope email". Each kind of refusal, by the DRF permission
and by the plain-Django decorator, is RFC 6750's, and the chain claims are cached with
DOT's cached token, not introspected on every request."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chain_grant.client import generate_key
from chain_grant.client.keys import dpop_proof
from chain_grant.oauth import views
from tests.helpers import SECRET, chain_token, make_token, user_step
from tests.test_dpop import TOKEN_URL, exchange, hop

REPO = Path(__file__).resolve().parent.parent
PATHS = ["/notes/", "/plain/notes/"]  # ChainRequired (DRF), @chain_required (plain Django)
pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    for port in range(18400, 18500):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18400-18499")


@contextlib.contextmanager
def resource_server(live_server, tmp_path_factory, **env):
    """A resource server's process (tests/remote_rs) whose credentials are notes-rs's."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.remote_rs.settings",
        "RS_DATABASE": str(tmp_path_factory.mktemp("rs") / "rs.sqlite3"),
        "RS_INTROSPECTION_URL": f"{live_server.url}/oauth/introspect/",
        "RS_CLIENT_ID": "notes-rs",
        "RS_CLIENT_SECRET": SECRET,
        **env,
    }
    env.pop("DATABASE_URL", None)
    log = tmp_path_factory.mktemp("rs-log") / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.remote_rs.serve", str(port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        line = process.stdout.readline()  # blocks until the server listens (or the process died)
        assert line.strip() == "ready", log.read_text()
        yield f"http://127.0.0.1:{port}"
        assert "Traceback" not in log.read_text(), log.read_text()  # never a 500
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()


@pytest.fixture(scope="module")
def remote_rs(live_server, tmp_path_factory):
    """The README's resource server (ChainResourceValidator), for the module."""
    with resource_server(live_server, tmp_path_factory, RS_KEEP_CLAIMS="1") as url:
        yield url


@pytest.fixture
def agents(make_agent, make_app, chain_settings):
    """The IdP's side: the agents by name, and notes-rs, a client designated to see chains."""
    make_app("notes-rs", enabled=False)
    chain_settings(INTROSPECTION_RESOURCE_SERVERS=["notes-rs"])
    return {
        name: make_agent(name, scopes="openid email read") for name in ("planner", "researcher", "critic", "writer")
    }


def call(url, token=None, scheme="Bearer"):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def assert_refused(answer, status, error, description):
    code, body, headers = answer
    assert (code, body) == (status, {"error": error, "error_description": description})
    assert headers["WWW-Authenticate"] == f'Bearer error="{error}", error_description="{description}"'


@pytest.mark.parametrize("path", PATHS)
def test_the_writer_with_a_persons_consent_one_hop_up_is_served(remote_rs, flow, alice, agents, path):
    token = chain_token(flow, alice, agents, ["planner", "user", "writer"])
    assert call(remote_rs + path, token)[:2] == (200, {"by": "writer", "for": "alice", "depth": 3})


UNMET = {
    "another actor": (["planner", "user", "critic"], {}, "requires the actor writer"),
    "no planner upstream": (["writer"], {}, "requires the actor planner upstream"),
    "too deep": (["planner", "researcher", "user", "writer"], {}, "requires a chain depth of at most 3"),
    "no person one hop up": (["planner", "writer"], {}, "requires a person's step within 1 hop"),
    "no email": (
        ["planner", "user", "writer"],
        {"root_scope": "openid read", "consent_scope": "openid read"},
        "requires the scope email",
    ),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(UNMET))
def test_each_unmet_requirement_is_403_insufficient_scope_naming_it(remote_rs, flow, alice, agents, path, case):
    line, scopes, description = UNMET[case]
    token = chain_token(flow, alice, agents, line, **scopes)
    assert_refused(call(remote_rs + path, token), 403, "insufficient_scope", description)


@pytest.mark.parametrize("path", PATHS)
def test_a_token_from_no_chain_is_403(remote_rs, alice, app, agents, path):
    answer = call(remote_rs + path, make_token(alice, app, "openid email"))
    assert_refused(answer, 403, "insufficient_scope", "requires a token issued from an authorization code chain")


@pytest.mark.parametrize("path", PATHS)
def test_a_resource_server_the_idp_does_not_designate_sees_no_chain(
    remote_rs, flow, alice, agents, chain_settings, path
):
    token = chain_token(flow, alice, agents, ["planner", "user", "writer"])
    chain_settings(INTROSPECTION_RESOURCE_SERVERS=[])  # introspection keeps the chain from notes-rs
    answer = call(remote_rs + path, token)
    assert_refused(answer, 403, "insufficient_scope", "requires a token issued from an authorization code chain")


@pytest.mark.parametrize("path", PATHS)
def test_no_token_an_unknown_or_a_revoked_one_is_401(remote_rs, flow, alice, agents, path):
    status, body, headers = call(remote_rs + path)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in headers["WWW-Authenticate"]  # RFC 6750 §3.1: no error without a token
    status, body, headers = call(remote_rs + path, "not-a-token")
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
    token = chain_token(flow, alice, agents, ["planner", "user", "writer"])
    assert flow.client.post("/oauth/revoke_token/", {"token": token}, **flow.auth()).status_code == 200
    status, body, headers = call(remote_rs + path, token)  # revoked before this server first saw it
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]


@pytest.mark.parametrize("path", PATHS)
def test_a_dpop_bound_token_is_not_a_bearer_token_here(remote_rs, flow, alice, agents, path):
    """The IdP shows cnf.jkt; this resource server takes bearer tokens only, so it refuses."""
    key = generate_key("EC")
    code, verifier = flow.authorize(alice, scope="openid email read")
    code, verifier, _ = flow.advance(code, agents["planner"])
    code, verifier = user_step(flow, alice, code)
    bound = hop(flow, code, agents["writer"], dpop_proof(key, htm="POST", htu=TOKEN_URL))
    token = exchange(
        flow, bound.json()["authorization_code"], bound.verifier, dpop_proof(key, htm="POST", htu=TOKEN_URL)
    )
    description = "This token is DPoP-bound: this resource server takes bearer tokens only."
    assert_refused(call(remote_rs + path, token.json()["access_token"]), 401, "invalid_token", description)


@pytest.fixture
def introspected(monkeypatch):
    """The tokens the IdP's introspection endpoint is asked about, in order."""
    seen = []
    real = views.IntrospectTokenView.get_token_response

    def counted(self, token_value=None):
        seen.append(token_value)
        return real(self, token_value)

    monkeypatch.setattr(views.IntrospectTokenView, "get_token_response", counted)
    return seen


def test_the_chain_is_introspected_once_then_cached_with_the_token(remote_rs, flow, alice, agents, introspected):
    """DOT's authentication introspects and caches the token row; ChainResourceValidator
    keeps the chain claims of that answer until the row expires: the requirement, DRF's
    or the decorator's, asks the IdP nothing more."""
    token = chain_token(flow, alice, agents, ["planner", "user", "writer"])
    for path in PATHS * 2:
        assert call(remote_rs + path, token)[0] == 200
    assert introspected == [token]


def test_with_dots_own_validator_the_chain_costs_one_more_call(
    live_server, tmp_path_factory, flow, alice, agents, introspected
):
    """Without ChainResourceValidator DOT's answer is not kept: the requirement introspects
    once more, through DOT, and caches the claims; still nothing after that."""
    token = chain_token(flow, alice, agents, ["planner", "user", "writer"])
    with resource_server(live_server, tmp_path_factory) as url:
        for path in PATHS * 2:
            assert call(url + path, token)[:2] == (200, {"by": "writer", "for": "alice", "depth": 3})
        assert_refused(
            call(url + "/notes/", chain_token(flow, alice, agents, ["planner", "writer"])),
            403,
            "insufficient_scope",
            "requires a person's step within 1 hop",
        )
    assert introspected[:2] == [token, token] and len(introspected) == 4


def test_the_readme_shows_this_resource_server():
    """The README's remote resource server is tests/remote_rs/'s: its view, word for word,
    and the settings this one reads from the environment."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("### Resource servers: requiring a chain", 1)[1].split("```python\n", 1)[1].split("```")[0]
    view = block.split("# urls.py\n", 1)[1].split("\n\nurlpatterns")[0]
    assert view in (REPO / "tests" / "remote_rs" / "urls.py").read_text()
    settings_text = (REPO / "tests" / "remote_rs" / "settings.py").read_text()
    for name in ("RESOURCE_SERVER_INTROSPECTION_URL", "RESOURCE_SERVER_INTROSPECTION_CREDENTIALS"):
        assert f'"{name}"' in block and f'"{name}"' in settings_text
    validator = '"chain_grant.oauth.chain_required.ChainResourceValidator"'
    assert validator in block and validator in settings_text
    assert len([line for line in block.splitlines() if line.strip()]) == 10  # a ten-line remote resource server
