"""scripts/agent_chat.py, the example behind `make demo`, end to end against a live server:
the wallet presentation, agent hand-offs with fan-out, alice's consent, the writer, the
answer published with the writer's token; the chain it prints is the chain in the
database. And its failure paths: IdP down, chain revoked midway, agent disabled."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from chain_grant.client.wallet import HeadlessWallet
from chain_grant.core import integrity, lifecycle
from chain_grant.models import ChainedGrant
from chain_grant.review import evidence as review
from idp_project.models import Answer

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "agent_chat.py"
ORDER = [
    "wallet",
    "planner",
    "researcher",
    "security",
    "implementer",
    "merger",
    "merger",
    "merger",
    "critic",
    "alice",
    "writer",
]
SECRET_LIKE = re.compile(r"[A-Za-z0-9_-]{40,}")  # a code or a token; UUIDs (36) and shortened DIDs are shorter


def load_agent_chat():
    """scripts/ is not a package: load the script as a module."""
    spec = importlib.util.spec_from_file_location("agent_chat_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def agent_chat():
    return load_agent_chat()


@pytest.fixture
def demo_var(settings, tmp_path):
    """bootstrap_demo's var dir (credentials, agent keys) for the test database."""
    settings.VAR_DIR = tmp_path
    call_command("bootstrap_demo", stdout=io.StringIO())
    return tmp_path


@pytest.fixture
def secrets_seen(agent_chat, monkeypatch):
    """Every code and token the script handles, to prove none of them is ever printed."""
    seen: list[str] = []

    def spy(name, pick):
        real = getattr(agent_chat, name)

        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            seen.extend(pick(result))
            return result

        monkeypatch.setattr(agent_chat, name, wrapper)

    spy("code_chain", lambda body: [body["authorization_code"]])
    spy("exchange_code", lambda body: [body["access_token"], body.get("refresh_token", ""), body.get("id_token", "")])
    spy("_callback", lambda callback: [callback.code])
    return seen


def printed_tree(output: str) -> list[tuple[str, ...]]:
    """The printed tree, as each step's path of "kind actor" labels from the root."""
    lines = output.split("\nChain ", 1)[1].split("\nIntegrity:", 1)[0].splitlines()[1:]
    paths, stack = [], []
    for line in lines:
        body = line[2:]
        start = re.search(r"[a-z]", body).start()
        depth = start // 3 if start else 0
        kind, actor = body[start:].split("  ", 1)[0].split(" ", 1)
        stack[depth:] = [f"{kind} {actor}"]
        paths.append(tuple(stack))
    return paths


def database_tree(agent_chat, chain_id) -> list[tuple[str, ...]]:
    steps = {s.pk: s for s in ChainedGrant.objects.filter(root_id=chain_id).select_related("agent", "user")}

    def label(step):
        actor = review.actor_label(step)
        return f"{step.kind} {agent_chat.short(actor, 28) if step.kind == 'wallet' else actor}"

    def path(step):
        return (path(steps[step.parent_id]) if step.parent_id else ()) + (label(step),)

    return [path(s) for s in steps.values()]


def assert_run_matches_database(agent_chat, result, events, output, seen):
    chain_id = result.chain_id
    rows = list(ChainedGrant.objects.filter(root_id=chain_id).select_related("agent", "user"))
    assert len(rows) == len(events) == 11
    assert [e.index for e in events] == list(range(11)) and {e.chain_id for e in events} == {chain_id}
    assert [e.actor if e.kind != "wallet" else "wallet" for e in events] == ORDER
    assert [e.kind for e in events] == ["wallet"] + ["agent"] * 8 + ["user", "agent"]

    # Each step the script reports is that row: kind, actor, depth, parent, the message it signed.
    by_prefix = {row.code_digest[:8]: row for row in rows}
    row_of = [by_prefix[e.code_digest_prefix] for e in events]
    for event, row in zip(events, row_of, strict=True):
        assert (row.kind, review.actor_label(row), row.depth) == (event.kind, event.actor, event.depth)
        assert row.parent_id == (row_of[event.parent].pk if event.parent is not None else None)
        assert row.message_digest == (event.message_sha256 or "")
    assert str(row_of[0].pk) == chain_id and row_of[0].parent_id is None
    assert max(row.depth for row in rows) == 6
    planner = row_of[1]
    assert sorted(review.actor_label(r) for r in rows if r.parent_id == planner.pk) == [
        "implementer",
        "researcher",
        "security",
    ]  # the fan-out
    assert [r.parent_id for r in row_of[5:8]] == [row_of[2].pk, row_of[3].pk, row_of[4].pk]  # a merger per branch
    assert row_of[8].parent_id == row_of[7].pk and row_of[8].proof_claims["merged_steps"] == [
        r.code_digest[:8] for r in row_of[5:8]
    ]
    assert row_of[9].kind == "user" and row_of[9].user.username == "alice" and "email" in row_of[9].scope.split()
    assert row_of[10].exchanged_at is not None and row_of[10].access_token_id

    # The printed tree is the database's tree; the chain verifies.
    assert sorted(printed_tree(output)) == sorted(database_tree(agent_chat, chain_id))
    assert result.verification["ok"] and integrity.verify_chain(chain_id).ok
    assert "Integrity: ✓ verified (11 steps" in output

    # The transcript is what the agents signed: every agent step's msg_sha256 is one of its messages.
    said = {hashlib.sha256(text.encode()).hexdigest() for _, _, text in result.transcript}
    assert {row.message_digest for row in rows if row.kind == "agent"} <= said

    # The answer is stored with the chain read from the writer's token.
    answer = Answer.objects.get(chain_id=chain_id)
    assert answer.text == result.transcript[-1][2] == result.answer["text"]
    assert [a["actor"] for a in answer.actors][1:] == ["planner", "implementer", "merger", "critic", "alice", "writer"]
    assert answer.act["sub"] == "writer" and answer.user.username == "alice"
    assert answer.scope == result.token_scope and "email" in answer.scope.split()

    # Codes are shown shortened as they advance, never whole; tokens never.
    assert len(seen) >= 11 and all(secret not in output for secret in seen if secret)
    assert not SECRET_LIKE.search(output), SECRET_LIKE.search(output)
    code_of = {hashlib.sha256(code.encode()).hexdigest()[:8]: code for code in seen if code}
    for event in events:
        assert f"{code_of[event.code_digest_prefix][:6]}…" in output  # each code, as it advances

    # The admin URL it prints is the chain's page.
    path = urllib.parse.urlsplit(result.admin_url).path
    assert path == f"/admin/chain_grant/chain/{chain_id}/tree/" and result.admin_url in output
    admin = Client()
    admin.force_login(get_user_model().objects.get(username="admin"))
    page = admin.get(path)
    assert page.status_code == 200 and chain_id in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_example_runs_end_to_end_and_again(agent_chat, live_server, demo_var, secrets_seen):
    events, out = [], io.StringIO()
    result = agent_chat.run([live_server.url], var_dir=demo_var, on_step=events.append, out=out)
    assert_run_matches_database(agent_chat, result, events, out.getvalue(), secrets_seen)

    # A second run makes a new chain, with the same wallet and the same (deterministic) conversation.
    events2, out2 = [], io.StringIO()
    again = agent_chat.run(live_server.url, var_dir=demo_var, on_step=events2.append, out=out2)
    assert again.chain_id != result.chain_id
    assert ChainedGrant.objects.filter(depth=0).count() == 2 and Answer.objects.count() == 2
    assert again.transcript == result.transcript
    assert events2[0].actor == events[0].actor == HeadlessWallet.load(demo_var / "demo_wallet.json").did
    assert (
        ChainedGrant.objects.filter(root_id=again.chain_id).count() == 11 and integrity.verify_chain(again.chain_id).ok
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_the_command_line_round_robins_and_drops_a_refusing_address(live_server, demo_var, settings):
    """Two addresses of one IdP (localhost and 127.0.0.1: cookies and CSRF across hosts)
    and one that refuses connections: the run completes, as in a cluster with a node down."""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": f"{live_server.url}/oauth"}
    port = urllib.parse.urlsplit(live_server.url).port
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--idp",
            f"{dead},{live_server.url}",
            "--idp",
            f"http://127.0.0.1:{port}",
            "--var",
            str(demo_var),
            "--once",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Integrity: ✓ verified (11 steps" in result.stdout and not SECRET_LIKE.search(result.stdout)
    root = ChainedGrant.objects.get(depth=0)
    assert root.kind == "wallet" and ChainedGrant.objects.filter(root=root).count() == 11
    assert f"/admin/chain_grant/chain/{root.pk}/tree/" in result.stdout


@pytest.mark.django_db
def test_idp_down_is_a_clear_error(agent_chat, demo_var):
    out, err = io.StringIO(), io.StringIO()
    dead = f"http://127.0.0.1:{free_port()}"
    status = agent_chat.main(["--idp", dead, "--var", str(demo_var)], out=out, err=err)
    assert status == agent_chat.EXIT_UNREACHABLE == 3
    assert f"cannot reach the IdP at {dead} (connection refused)" in err.getvalue()
    assert "make run" in err.getvalue() and not ChainedGrant.objects.exists()


def test_missing_demo_files_is_a_clear_error(agent_chat, tmp_path):
    err = io.StringIO()
    assert agent_chat.main(["--var", str(tmp_path)], out=io.StringIO(), err=err) == 2
    assert "no demo credentials" in err.getvalue() and "make demo-data" in err.getvalue()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("after", "refused", "steps"),
    [
        (4, "the IdP refused the hand-off researcher → merger (step 5): invalid_grant", 5),
        (8, "alice's consent: invalid_request", 9),
    ],
)
def test_a_chain_revoked_midway_stops_the_run(agent_chat, live_server, demo_var, after, refused, steps):
    """An auditor revokes the chain while the agents work: the next hand-off (an agent's
    code_chain, or alice's consent on the authorize endpoint) is refused."""

    def revoke(event):
        if event.index == after:
            lifecycle.revoke_subtree(ChainedGrant.objects.get(pk=event.chain_id), "revoked by an auditor")

    out, err = io.StringIO(), io.StringIO()
    status = agent_chat.main(["--idp", live_server.url, "--var", str(demo_var)], on_step=revoke, out=out, err=err)
    assert status == 1, out.getvalue() + err.getvalue()
    message = err.getvalue()
    assert refused in message and "was revoked" in message and "start a new run" in message
    root = ChainedGrant.objects.get(depth=0)
    assert f"the chain so far: {live_server.url}/admin/chain_grant/chain/{root.pk}/tree/" in message
    assert ChainedGrant.objects.filter(root=root).count() == steps
    assert not ChainedGrant.objects.filter(root=root, revoked_at__isnull=True).exists()
    assert not Answer.objects.exists() and "Integrity" not in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_disabled_agent_stops_the_run(agent_chat, live_server, demo_var):
    call_command("chain_grant_agent", "disable", "critic", stdout=io.StringIO())
    out, err = io.StringIO(), io.StringIO()
    status = agent_chat.main(["--idp", live_server.url, "--var", str(demo_var)], out=out, err=err)
    assert status == 1
    message = err.getvalue()
    assert "refused the hand-off merger → critic (step 8): invalid_grant" in message
    assert "the agent is disabled" in message
    assert not ChainedGrant.objects.filter(agent__identifier="critic").exists()
    assert ChainedGrant.objects.count() == 8 and not Answer.objects.exists()


def callback_port_free() -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", 8765))
        except OSError:
            return False
    return True


@pytest.mark.django_db(transaction=True)
def test_interactive_mode_opens_the_browser_and_waits_for_the_callback(agent_chat, live_server, demo_var, monkeypatch):
    """--interactive: webbrowser.open gets the authorize URL; the person's browser (here a
    headless one with a wallet and alice's password) ends on 127.0.0.1:8765/oauth-callback."""
    if not callback_port_free():
        pytest.skip("127.0.0.1:8765 is in use")
    import json

    password = json.loads((demo_var / "demo_credentials.json").read_text())["alice_password"]
    opened: list[str] = []

    def person(url):
        opened.append(url)
        parts = urllib.parse.urlsplit(url)
        params = dict(urllib.parse.parse_qsl(parts.query))

        def act():
            try:
                pool = agent_chat.IdPPool([live_server.url])
                browser = agent_chat.HeadlessBrowser(pool, login=("alice", password), wallet=HeadlessWallet.generate())
                callback = browser.authorize(parts.path, params, "the person's browser")
                answer = {"code": callback.code, "state": callback.state}
            except Exception as exc:  # noqa: BLE001 (end the run now, with the reason, instead of a timeout)
                answer = {"error": "test_person_failed", "error_description": repr(exc), "state": params["state"]}
            requests.get(f"{agent_chat.REDIRECT_URI}?" + urllib.parse.urlencode(answer), timeout=10)

        threading.Thread(target=act, daemon=True).start()
        return True

    monkeypatch.setattr(agent_chat.webbrowser, "open", person)
    monkeypatch.setattr(agent_chat, "INTERACTIVE_TIMEOUT", 60)
    out = io.StringIO()
    result = agent_chat.run([live_server.url], var_dir=demo_var, interactive=True, out=out)
    assert [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(u).query))["response_type"] for u in opened] == [
        "id_token",
        "code",
    ]
    assert "Waiting for the redirect to http://127.0.0.1:8765/oauth-callback" in out.getvalue()
    assert not SECRET_LIKE.search(out.getvalue())
    kinds = [s["kind"] for s in result.tree["steps"]]
    assert kinds.count("wallet") == 1 and kinds.count("user") == 1 and len(kinds) == 11
    assert result.verification["ok"] and Answer.objects.get().chain_id.hex == result.chain_id.replace("-", "")
