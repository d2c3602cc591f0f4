"""Management commands: ``bootstrap_demo`` (idp_project) and ``chain_grant_agent``
(chain_grant), including what a key rotation or a disabled key means at the token
endpoint."""

from __future__ import annotations

import json
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.hashers import check_password
from django.core.management import call_command
from django.core.management.base import CommandError
from jwcrypto import jwk
from oauth2_provider.models import get_application_model

from chain_grant.client import (
    CLIENT_ASSERTION_TYPE,
    client_assertion,
    generate_key,
    load_private_key,
    pkce_pair,
    sign_proof,
)
from chain_grant.core.policy import client_may_chain
from chain_grant.models import Agent, AgentKey, ChainClient, ChainedGrant
from idp_project.management.commands.bootstrap_demo import AGENTS, CLIENT_ID, REDIRECT_URIS
from tests.helpers import ISSUER, REDIRECT_URI, Flow, assert_error, proof_claims, sign_jws

pytestmark = pytest.mark.django_db

AGENT_NAMES = ["planner", "researcher", "security", "implementer", "merger", "critic", "writer"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- bootstrap_demo ---------------------------------------------------------------------


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def bootstrap() -> str:
    out = StringIO()
    call_command("bootstrap_demo", stdout=out)
    return out.getvalue()


def snapshot():
    return {
        "users": sorted(get_user_model().objects.values_list("username", flat=True)),
        "applications": get_application_model().objects.count(),
        "chain_clients": ChainClient.objects.count(),
        "agents": sorted(Agent.objects.values_list("identifier", flat=True)),
        "keys": sorted(
            (k.agent.identifier, k.kid, json.dumps(k.jwk, sort_keys=True), k.is_active)
            for k in AgentKey.objects.select_related("agent")
        ),
    }


def test_bootstrap_demo_creates_everything(var_dir):
    output = bootstrap()
    creds_path = var_dir / "demo_credentials.json"
    creds = json.loads(creds_path.read_text())
    assert mode(creds_path) == 0o600
    assert creds["client_id"] == CLIENT_ID
    assert creds["redirect_uri"] == REDIRECT_URI

    User = get_user_model()
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert authenticate(username="admin", password=creds["admin_password"]) == admin
    alice = User.objects.get(username="alice")
    assert not alice.is_superuser and not alice.is_staff
    assert authenticate(username="alice", password=creds["alice_password"]) == alice

    Application = get_application_model()
    app = Application.objects.get(client_id=CLIENT_ID)
    assert app.client_type == Application.CLIENT_CONFIDENTIAL
    assert app.authorization_grant_type == Application.GRANT_AUTHORIZATION_CODE
    assert app.redirect_uris == REDIRECT_URIS
    assert check_password(creds["client_secret"], app.client_secret)  # stored hashed
    assert ChainClient.objects.get(application=app).code_chain_enabled
    assert client_may_chain(app)

    assert sorted(Agent.objects.values_list("identifier", flat=True)) == sorted(AGENT_NAMES)
    for name in AGENT_NAMES:
        agent = Agent.objects.get(identifier=name)
        assert agent.is_active and not agent.self_asserted
        assert agent.allowed_scopes == AGENTS[name]
        assert list(agent.applications.all()) == [app]
        [key] = agent.keys.all()
        assert key.is_active

        key_path = var_dir / "agents" / f"{name}.json"
        assert key_path.exists()
        assert mode(key_path) == 0o600
        private = load_private_key(str(key_path))
        assert private.has_private
        assert private.export_public(as_dict=True) == key.jwk  # the registered key is its public part
        assert key.kid == private.thumbprint()
        assert "d" not in key.jwk and "p" not in key.jwk

        assert f"created  agent (scopes: {AGENTS[name]}; private key {key_path}): {name}" in output

    assert "created  admin user: admin" in output
    assert "created  demo user: alice" in output
    assert f"created  confidential client (code_chain enabled): {CLIENT_ID}" in output
    assert not [line for line in output.splitlines() if line.startswith("exists")]
    assert str(creds_path) in output
    assert creds["admin_password"] in output and creds["client_secret"] in output
    assert not ChainedGrant.objects.exists()  # no chain (and so no code) was created


def test_bootstrap_demo_is_idempotent(var_dir):
    bootstrap()
    creds_path = var_dir / "demo_credentials.json"
    creds_before = json.loads(creds_path.read_text())
    keys_before = {name: (var_dir / "agents" / f"{name}.json").read_text() for name in AGENT_NAMES}
    state = snapshot()
    assert len(state["keys"]) == 7

    output = bootstrap()
    assert snapshot() == state  # same users, client, agents, keys
    assert json.loads(creds_path.read_text()) == creds_before
    assert {name: (var_dir / "agents" / f"{name}.json").read_text() for name in AGENT_NAMES} == keys_before
    assert mode(creds_path) == 0o600
    assert authenticate(username="admin", password=creds_before["admin_password"]).is_superuser
    assert authenticate(username="alice", password=creds_before["alice_password"]) is not None

    status_lines = [line for line in output.splitlines() if line.startswith(("created", "exists"))]
    assert len(status_lines) == 3 + 7
    assert all(line.startswith("exists") for line in status_lines)
    assert f"admin / {creds_before['admin_password']}" in output


def test_bootstrap_demo_tightens_the_credentials_file(var_dir):
    bootstrap()
    creds_path = var_dir / "demo_credentials.json"
    creds_path.chmod(0o644)
    bootstrap()
    assert mode(creds_path) == 0o600


def test_bootstrap_demo_keeps_printed_credentials_true_after_losing_var_files(var_dir):
    """var/ lost but the database kept: the new credentials it prints must work, and
    only the agent key now on disk stays active."""
    from django.contrib.auth import authenticate
    from oauth2_provider.models import get_application_model

    bootstrap()
    (var_dir / "demo_credentials.json").unlink()
    (var_dir / "agents" / "planner.json").unlink()
    bootstrap()
    creds = json.loads((var_dir / "demo_credentials.json").read_text())
    assert authenticate(username="alice", password=creds["alice_password"]) is not None
    assert authenticate(username="admin", password=creds["admin_password"]) is not None
    app = get_application_model().objects.get(client_id="chain-demo")
    assert check_password(creds["client_secret"], app.client_secret)
    planner = Agent.objects.get(identifier="planner")
    on_disk = json.loads((var_dir / "agents" / "planner.json").read_text())["kid"]
    assert list(planner.keys.filter(is_active=True).values_list("kid", flat=True)) == [on_disk]


def test_bootstrap_demo_data_runs_a_chain(var_dir, client):
    """The demo client (its key from var/: key-only, its secret refused) and an agent key
    from var/ work at the real endpoints; ``--secret`` lets the client use its secret too."""
    bootstrap()
    creds = json.loads((var_dir / "demo_credentials.json").read_text())
    app = get_application_model().objects.get(client_id=CLIENT_ID)
    alice = get_user_model().objects.get(username="alice")
    flow = Flow(client, app, secret=creds["client_secret"])
    client_key = load_private_key(str(var_dir / creds["client_key"]))
    assert mode(var_dir / creds["client_key"]) == 0o600

    def hop(code, proof, **auth):
        verifier, challenge = pkce_pair()
        data = {"grant_type": "code_chain", "authorization_code": code, "id_token": proof}
        data.update(code_challenge=challenge, code_challenge_method="S256")
        return client.post("/oauth/token/", {**data, **auth})

    def by_key():
        assertion = client_assertion(client_key, client_id=CLIENT_ID, aud=ISSUER)
        return {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}

    code, _ = flow.authorize(alice, scope="openid read write")
    planner = load_private_key(str(var_dir / "agents" / "planner.json"))
    response = hop(code, sign_proof(planner, sub="planner", aud=ISSUER, code=code), **by_key())
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid read write"

    # The secret is refused (key-only), until bootstrap_demo --secret.
    response = flow.hop(code, sign_proof(planner, sub="planner", aud=ISSUER, code=code))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    call_command("bootstrap_demo", "--secret", stdout=StringIO())
    response = flow.hop(code, sign_proof(planner, sub="planner", aud=ISSUER, code=code))
    assert response.status_code == 200, response.content
    call_command("bootstrap_demo", stdout=StringIO())  # kept as it is
    assert flow.hop(code, sign_proof(planner, sub="planner", aud=ISSUER, code=code)).status_code == 200
    call_command("bootstrap_demo", "--key-only", stdout=StringIO())
    assert flow.hop(code, sign_proof(planner, sub="planner", aud=ISSUER, code=code)).status_code == 401

    # A key of another agent does not sign for the planner.
    critic = load_private_key(str(var_dir / "agents" / "critic.json"))
    response = hop(code, sign_proof(critic, sub="planner", aud=ISSUER, code=code), **by_key())
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


# --- chain_grant_agent ------------------------------------------------------------------


def run(*args) -> str:
    out = StringIO()
    call_command("chain_grant_agent", *args, stdout=out)
    return out.getvalue()


def ec_key(**kwargs) -> jwk.JWK:
    return jwk.JWK.generate(kty="EC", crv="P-256", **kwargs)


@pytest.fixture
def write(tmp_path):
    def write(name: str, content: str | bytes) -> str:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    return write


def add(identifier, key_file, app, *extra) -> str:
    # An agent with no allowed scope can never hop (a hop never makes a scope-less step).
    scopes = () if "--scopes" in extra else ("--scopes", "openid read write")
    return run("add", identifier, "--key", key_file, "--application", app.client_id, *extra, *scopes)


def test_add_from_public_jwk(app, write):
    key = ec_key()
    output = add(
        "planner", write("planner.jwk", key.export_public()), app, "--scopes", "openid  read", "--name", "The planner"
    )
    agent = Agent.objects.get(identifier="planner")
    assert agent.name == "The planner"
    assert agent.allowed_scopes == "openid read"
    assert agent.allowed_algorithms == []
    assert list(agent.applications.all()) == [app]
    [stored] = agent.keys.all()
    assert stored.kid == key.thumbprint() and stored.is_active
    assert stored.jwk == {**key.export_public(as_dict=True), "kid": key.thumbprint()}
    assert output.strip() == f"agent planner: keys {key.thumbprint()}"


def test_add_from_jwks_with_two_keys(app, write):
    first, second = ec_key(), ec_key(kid="second")
    jwks = {"keys": [first.export_public(as_dict=True), second.export_public(as_dict=True)]}
    jwks_file = write("researcher.jwks", json.dumps(jwks))
    output = add("researcher", jwks_file, app, "--algorithms", "ES256, ES384")
    agent = Agent.objects.get(identifier="researcher")
    assert sorted(agent.keys.values_list("kid", flat=True)) == sorted([first.thumbprint(), "second"])
    assert agent.keys.filter(is_active=True).count() == 2
    assert agent.allowed_algorithms == ["ES256", "ES384"]
    assert first.thumbprint() in output and "second" in output


def test_add_from_pem_public_key(app, write):
    key = ec_key()
    pem = key.export_to_pem(private_key=False, password=None)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    add("security", write("security.pem", pem), app)
    [stored] = Agent.objects.get(identifier="security").keys.all()
    assert stored.kid == key.thumbprint()
    assert jwk.JWK(**stored.jwk).thumbprint() == key.thumbprint()
    assert not jwk.JWK(**stored.jwk).has_private


def test_add_again_adds_keys_and_applications(app, make_app, write):
    other = make_app("other-client")
    first, second = ec_key(), ec_key()
    add("planner", write("a.jwk", first.export_public()), app)
    add("planner", write("b.jwk", second.export_public()), other)
    agent = Agent.objects.get(identifier="planner")
    assert Agent.objects.count() == 1
    assert set(agent.applications.all()) == {app, other}
    assert agent.keys.filter(is_active=True).count() == 2
    add("planner", write("a.jwk", first.export_public()), app)  # same kid again: no duplicate
    assert agent.keys.count() == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda: ec_key().export_private(), "private"),
        (lambda: ec_key().export_to_pem(private_key=True, password=None), "private"),
        (lambda: jwk.JWK.generate(kty="oct", size=256).export(), "symmetric"),
        (
            lambda: json.dumps({"keys": [ec_key().export_public(as_dict=True), json.loads(ec_key().export_private())]}),
            "private",
        ),
        (lambda: "not a key at all", "not a public JWK"),
    ],
    ids=["private-jwk", "private-pem", "oct", "jwks-with-a-private-key", "garbage"],
)
def test_add_refuses_bad_keys(app, write, content, message):
    with pytest.raises(CommandError, match=message):
        add("mallory", write("bad.key", content()), app)
    assert not Agent.objects.exists()
    assert not AgentKey.objects.exists()


def test_add_refuses_an_unknown_application(app, write):
    key_file = write("k.jwk", ec_key().export_public())
    with pytest.raises(CommandError, match="Unknown application.*nope"):
        run("add", "planner", "--key", key_file, "--application", "nope")
    with pytest.raises(CommandError, match="nope"):
        run("add", "planner", "--key", key_file, "--application", app.client_id, "--application", "nope")
    assert not Agent.objects.exists()


def test_add_refuses_a_missing_key_file(app, tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        add("planner", str(tmp_path / "missing.jwk"), app)
    assert not Agent.objects.exists()


def test_list(app, make_app, write):
    key = ec_key()
    add("planner", write("p.jwk", key.export_public()), app, "--scopes", "openid read")
    other = make_app("other-client")
    add("critic", write("c.pem", ec_key().export_to_pem(private_key=False, password=None)), other)

    output = run("list")
    lines = output.splitlines()
    assert lines[0].startswith("critic\tactive")  # ordered by identifier
    planner_line = lines.index(f"planner\tactive\tscopes='openid read'\tclients={app.client_id}")
    assert lines[planner_line + 1] == f"    {key.thumbprint()}\tEC\tactive"

    filtered = run("list", "--application", app.client_id)
    assert "planner" in filtered and "critic" not in filtered
    assert key.thumbprint() in filtered


def test_disable_one_key_then_the_agent_then_enable(app, write):
    first, second = ec_key(), ec_key()
    jwks = {"keys": [first.export_public(as_dict=True), second.export_public(as_dict=True)]}
    add("planner", write("p.jwks", json.dumps(jwks)), app)
    agent = Agent.objects.get(identifier="planner")

    assert run("disable", "planner", f"--kid={first.thumbprint()}").strip() == "disabled 1 key"
    disabled = agent.keys.get(kid=first.thumbprint())
    assert not disabled.is_active and disabled.disabled_at is not None
    assert agent.keys.get(kid=second.thumbprint()).is_active
    assert f"{first.thumbprint()}\tEC\tdisabled" in run("list")
    with pytest.raises(CommandError, match="no active key"):  # already disabled: say so
        run("disable", "planner", f"--kid={first.thumbprint()}")

    assert run("disable", "planner").strip() == "disabled 1 agent"
    agent.refresh_from_db()
    assert not agent.is_active
    assert "planner\tdisabled" in run("list")
    assert agent.keys.get(kid=second.thumbprint()).is_active  # keys are kept as they were

    assert run("enable", "planner").strip() == "enabled agent planner"
    agent.refresh_from_db()
    assert agent.is_active
    assert not agent.keys.get(kid=first.thumbprint()).is_active  # enable does not revive keys


def test_disable_a_kid_starting_with_a_dash(app, write):
    # Thumbprints are base64url: 1 in 64 starts with "-", which argparse reads as an
    # option after a separate "--kid"; the "--kid=VALUE" spelling always works.
    dashed, other = ec_key(kid="-old-key"), ec_key()
    jwks = {"keys": [dashed.export_public(as_dict=True), other.export_public(as_dict=True)]}
    add("planner", write("p.jwks", json.dumps(jwks)), app)
    assert run("disable", "planner", "--kid=-old-key").strip() == "disabled 1 key"
    agent = Agent.objects.get(identifier="planner")
    assert not agent.keys.get(kid="-old-key").is_active
    assert agent.keys.get(kid=other.thumbprint()).is_active


def test_rotate_adds_new_key_and_disables_old_ones(app, write):
    old1, old2, new = ec_key(), ec_key(), ec_key()
    jwks = {"keys": [old1.export_public(as_dict=True), old2.export_public(as_dict=True)]}
    add("planner", write("old.jwks", json.dumps(jwks)), app)

    new_file = write("new.pem", new.export_to_pem(private_key=False, password=None))
    output = run("rotate", "planner", "--key", new_file)
    assert output.strip() == f"agent planner: added {new.thumbprint()}; disabled 2 key(s)"
    agent = Agent.objects.get(identifier="planner")
    assert list(agent.keys.filter(is_active=True).values_list("kid", flat=True)) == [new.thumbprint()]
    assert set(agent.keys.filter(is_active=False).values_list("kid", flat=True)) == {
        old1.thumbprint(),
        old2.thumbprint(),
    }
    assert all(k.disabled_at is not None for k in agent.keys.filter(is_active=False))


def test_rotate_back_to_an_old_key_reactivates_it(app, write):
    old, new = ec_key(), ec_key()
    add("planner", write("old.jwk", old.export_public()), app)
    run("rotate", "planner", "--key", write("new.jwk", new.export_public()))
    run("rotate", "planner", "--key", write("old.jwk", old.export_public()))
    agent = Agent.objects.get(identifier="planner")
    assert list(agent.keys.filter(is_active=True).values_list("kid", flat=True)) == [old.thumbprint()]
    assert agent.keys.get(kid=old.thumbprint()).disabled_at is None


def test_rotate_refuses_private_keys_and_keeps_the_old_one(app, write):
    old = ec_key()
    add("planner", write("old.jwk", old.export_public()), app)
    private_file = write("new.pem", ec_key().export_to_pem(private_key=True, password=None))
    with pytest.raises(CommandError, match="private"):
        run("rotate", "planner", "--key", private_file)
    agent = Agent.objects.get(identifier="planner")
    assert list(agent.keys.values_list("kid", "is_active")) == [(old.thumbprint(), True)]


@pytest.mark.parametrize("action", [["rotate", "ghost", "--key", "x"], ["disable", "ghost"], ["enable", "ghost"]])
def test_unknown_agent(action):
    with pytest.raises(CommandError, match="No agent 'ghost'"):
        run(*action)


def test_a_different_key_under_an_existing_kid_is_refused(app, write):
    """Regression: a new key reusing an old kid used to be silently ignored, so a
    "rotation" left the old (perhaps compromised) key active and the new one unknown."""
    old, new = ec_key(kid="primary"), ec_key(kid="primary")
    add("planner", write("old.jwk", old.export_public()), app)
    new_file = write("new.jwk", new.export_public())
    with pytest.raises(CommandError, match="primary"):
        run("rotate", "planner", "--key", new_file)
    with pytest.raises(CommandError, match="primary"):
        add("planner", new_file, app)
    [stored] = Agent.objects.get(identifier="planner").keys.all()  # unchanged, nothing disabled
    assert stored.is_active and stored.jwk == old.export_public(as_dict=True)


def test_adding_a_key_keeps_the_agents_policy(flow, alice, tmp_path):
    """Rule: ``chain_grant_agent add`` for an existing agent without --scopes or
    --algorithms adds the key and keeps allowed_scopes and allowed_algorithms (it used
    to reset them to "everything"); the new key is bound by the same policy."""
    first, second = generate_key("EC"), generate_key("EC")
    for name, key in (("first.jwk", first), ("second.jwk", second)):
        (tmp_path / name).write_text(key.export_public())

    def add(key_file, *options):
        call_command(
            "chain_grant_agent",
            "add",
            "planner",
            "--key",
            str(tmp_path / key_file),
            "--application",
            flow.app.client_id,
            *options,
            stdout=StringIO(),
        )

    add("first.jwk", "--scopes", "openid read", "--algorithms", "ES256")
    add("second.jwk")
    agent = Agent.objects.get(identifier="planner")
    assert agent.allowed_scopes == "openid read"
    assert agent.allowed_algorithms == ["ES256"]
    assert sorted(agent.keys.filter(is_active=True).values_list("kid", flat=True)) == sorted(
        [first.thumbprint(), second.thumbprint()]
    )

    code, _ = flow.authorize(alice, scope="openid read write")
    response = flow.hop(code, sign_proof(second, sub="planner", aud=ISSUER, code=code))
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid read"

    add("second.jwk", "--scopes", "read")  # given explicitly: changed
    agent.refresh_from_db()
    assert (agent.allowed_scopes, agent.allowed_algorithms) == ("read", ["ES256"])


# --- what rotation and disabling mean at the token endpoint -----------------------------


def proof(key, code, sub="planner"):
    return sign_proof(key, sub=sub, aud=ISSUER, code=code)


def test_after_rotate_only_the_new_key_signs(flow, alice, app, write):
    old, new = ec_key(), ec_key()
    add("planner", write("old.jwk", old.export_public()), app, "--scopes", "openid read write")
    code, _ = flow.authorize(alice)
    assert flow.hop(code, proof(old, code)).status_code == 200  # before: the old key works

    run("rotate", "planner", "--key", write("new.jwk", new.export_public()))
    code, _ = flow.authorize(alice)
    refused = flow.hop(code, proof(old, code))
    assert_error(refused, 400, "invalid_grant")
    assert "kid" in refused.json()["error_description"]
    response = flow.hop(code, proof(new, code))
    assert response.status_code == 200, response.content
    assert response.json()["depth"] == 1
    assert ChainedGrant.objects.filter(agent__identifier="planner").count() == 2  # one per accepted hop


def test_old_key_without_kid_is_refused_after_rotate(flow, alice, app, write):
    """Even when the proof names no kid, only the (single) active key is tried."""
    old, new = ec_key(), ec_key()
    add("planner", write("old.jwk", old.export_public()), app)
    run("rotate", "planner", "--key", write("new.jwk", new.export_public()))
    code, _ = flow.authorize(alice)

    def no_kid_proof(key):
        return sign_jws(key, proof_claims("planner", code), {"kid": None})

    assert_error(flow.hop(code, no_kid_proof(old)), 400, "invalid_grant")
    assert flow.hop(code, no_kid_proof(new)).status_code == 200


def test_disabled_key_and_disabled_agent_are_refused(flow, alice, app, write):
    first, second = ec_key(), ec_key()
    jwks = {"keys": [first.export_public(as_dict=True), second.export_public(as_dict=True)]}
    add("planner", write("p.jwks", json.dumps(jwks)), app)
    code, _ = flow.authorize(alice)

    run("disable", "planner", f"--kid={first.thumbprint()}")
    assert_error(flow.hop(code, proof(first, code)), 400, "invalid_grant")
    assert flow.hop(code, proof(second, code)).status_code == 200

    run("disable", "planner")
    assert_error(flow.hop(code, proof(second, code)), 400, "invalid_grant")

    run("enable", "planner")
    assert flow.hop(code, proof(second, code)).status_code == 200
    assert_error(flow.hop(code, proof(first, code)), 400, "invalid_grant")  # still disabled
    assert ChainedGrant.objects.filter(subject="planner").count() == 2


def test_agent_is_limited_to_its_applications(flow, alice, make_app, write):
    other = make_app("other-client")
    key = ec_key()
    add("planner", write("p.jwk", key.export_public()), other)
    code, _ = flow.authorize(alice)
    assert_error(flow.hop(code, proof(key, code)), 400, "invalid_grant")  # registered for other-client, not flow.app
