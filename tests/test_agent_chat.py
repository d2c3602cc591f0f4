"""scripts/agent_chat.py, the example behind `make demo`, end to end against a live server:
the wallet presentation, agent hand-offs with fan-out and a join (fan-in: the merger is
one step with the three branches as parents), alice's consent, the writer, the
answer published with the writer's token; the chain it prints is the chain in the
database. Every agent call authenticates the demo client with private_key_jwt (a fresh
assertion per request, never its secret; the client is key-only), or, with
--client-secret-auth and bootstrap_demo --secret, with its secret. Its command line as
scripts/run_dev.sh runs it, and its failure paths: IdP down, chain revoked midway, agent
disabled, missing demo files, a client key the IdP does not know. The steps are observed,
and the run through several addresses of one IdP made, by the harness (tests/harness/)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from chain_grant.client import CLIENT_ASSERTION_TYPE, generate_key
from chain_grant.client.jose import b64url_decode, code_hash
from chain_grant.client.wallet import HeadlessWallet
from chain_grant.core import integrity, lifecycle, retention
from chain_grant.models import ChainClient, ChainedGrant, DPoPBinding, UsedJti
from chain_grant.review import evidence as review
from idp_project.models import Answer
from tests.harness import chat as harness
from tests.harness import load_agent_chat
from tests.harness.failover import AddressPool
from tests.harness.person import headless_person

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "agent_chat.py"
ORDER = [
    "wallet",
    "planner",
    "researcher",
    "security",
    "implementer",
    "merger",
    "critic",
    "alice",
    "writer",
]
SECRET_LIKE = re.compile(r"[A-Za-z0-9_-]{40,}")  # a code or a token; UUIDs (36) and shortened DIDs are shorter


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

    def spy(module, name, pick):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            seen.extend(pick(result))
            return result

        monkeypatch.setattr(module, name, wrapper)

    spy(agent_chat.sdk, "code_chain", lambda body: [body["authorization_code"]])
    tokens = ("access_token", "refresh_token", "id_token")
    spy(agent_chat.sdk, "exchange_code", lambda body: [body.get(name, "") for name in tokens])
    spy(agent_chat, "read_callback", lambda code: [code])
    return seen


@pytest.fixture
def sent(monkeypatch):
    """Every request the SDK (and the wallet, and discovery) sends with urlopen:
    (url, headers, form fields), to see how the client authenticated."""
    seen: list[tuple[str, dict[str, str], dict[str, str]]] = []
    real = urllib.request.urlopen

    def spy(request, *args, **kwargs):
        if isinstance(request, urllib.request.Request):
            form = dict(urllib.parse.parse_qsl(request.data.decode())) if request.data else {}
            seen.append((request.full_url, {k.lower(): v for k, v in request.header_items()}, form))
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", spy)
    return seen


def token_requests(sent) -> list[tuple[dict[str, str], dict[str, str]]]:
    return [(headers, form) for url, headers, form in sent if urllib.parse.urlsplit(url).path == "/oauth/token/"]


def assert_private_key_jwt_only(sent, demo_var, issuer: str, count: int) -> None:
    """``count`` token requests, each authenticated by its own client assertion (aud =
    the issuer), none with HTTP Basic or a client_secret; the secret never sent at all."""
    requests = token_requests(sent)
    assert len(requests) == count
    jtis = set()
    for headers, form in requests:
        assert "authorization" not in headers and "client_secret" not in form and "client_id" not in form
        assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
        claims = json.loads(b64url_decode(form["client_assertion"].split(".")[1]))
        assert claims["iss"] == claims["sub"] == "chain-demo" and claims["aud"] == issuer
        jtis.add(claims["jti"])
    assert len(jtis) == count  # a fresh assertion per request
    secret = json.loads((demo_var / "demo_credentials.json").read_text())["client_secret"]
    assert not [s for s in sent if secret in repr(s)]


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
    assert len(rows) == len(events) == 9
    assert [e.index for e in events] == list(range(9)) and {e.chain_id for e in events} == {chain_id}
    assert [e.actor if e.kind != "wallet" else "wallet" for e in events] == ORDER
    assert [e.kind for e in events] == ["wallet"] + ["agent"] * 6 + ["user", "agent"]

    # Each step the script reports is that row: kind, actor, depth, parent, the message it signed.
    by_prefix = {row.code_digest[:8]: row for row in rows}
    row_of = [by_prefix[e.code_digest_prefix] for e in events]
    for event, row in zip(events, row_of, strict=True):
        assert (row.kind, review.actor_label(row), row.depth) == (event.kind, event.actor, event.depth)
        assert row.parent_id == (row_of[event.parent].pk if event.parent is not None else None)
        assert row.message_digest == (event.message_sha256 or "")
    assert str(row_of[0].pk) == chain_id and row_of[0].parent_id is None
    assert max(row.depth for row in rows) == 6
    assert [row.depth for row in row_of] == [0, 1, 2, 2, 2, 3, 4, 5, 6]
    planner = row_of[1]
    assert sorted(review.actor_label(r) for r in rows if r.parent_id == planner.pk) == [
        "implementer",
        "researcher",
        "security",
    ]  # the fan-out
    merger, critic = row_of[5], row_of[6]  # the merger: one join step, the researcher its primary parent
    assert [r for r in rows if review.actor_label(r) == "merger"] == [merger]
    assert merger.parent_id == row_of[2].pk and [j["step"] for j in merger.joined] == [
        str(row_of[3].pk),
        str(row_of[4].pk),
    ]
    assert result.steps[5].joined == (3, 4)  # as the script recorded it
    api = {s["id"]: s for s in result.tree["steps"]}
    assert [api[j]["actor"] for j in api[str(merger.pk)]["joined"]] == ["security", "implementer"]
    assert "merged_steps" not in merger.proof_claims and "merged_steps" not in critic.proof_claims
    assert critic.parent_id == merger.pk and critic.joined == []
    assert row_of[7].kind == "user" and row_of[7].user.username == "alice" and "email" in row_of[7].scope.split()
    assert row_of[8].exchanged_at is not None and row_of[8].access_token_id

    # The printed tree is the database's tree; the chain verifies.
    assert sorted(printed_tree(output)) == sorted(database_tree(agent_chat, chain_id))
    assert result.verification["ok"] and integrity.verify_chain(chain_id).ok
    assert "Integrity: ✓ verified (9 steps" in output
    assert "└─ agent merger  “openid read”  joins: security, implementer" in output  # once, under the researcher

    # The transcript is what the agents signed: every agent step's msg_sha256 is one of its messages.
    said = {hashlib.sha256(text.encode()).hexdigest() for _, _, text in result.transcript}
    assert {row.message_digest for row in rows if row.kind == "agent"} <= said

    # The answer is stored with the chain read from the writer's token.
    answer = Answer.objects.get(chain_id=chain_id)
    assert answer.text == result.transcript[-1][2] == result.answer["text"]
    assert [a["actor"] for a in answer.actors][1:] == ["planner", "researcher", "merger", "critic", "alice", "writer"]
    assert answer.act["sub"] == "writer" and answer.user.username == "alice"
    assert answer.scope == result.token_scope and "email" in answer.scope.split()

    # Codes are shown shortened as they advance, never whole; tokens never.
    assert len(seen) >= 9 and all(secret not in output for secret in seen if secret)
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
def test_the_example_runs_end_to_end_and_again(agent_chat, live_server, demo_var, secrets_seen, sent):
    events, out = [], io.StringIO()
    result = harness.run(live_server.url, var_dir=demo_var, on_step=events.append, out=out)
    assert result.events == events
    assert_run_matches_database(agent_chat, result, events, out.getvalue(), secrets_seen)

    # The agents' calls (7 hops, the writer's exchange) authenticated the key-only demo
    # client with private_key_jwt: one assertion each, each jti used once at the IdP.
    chain_client = ChainClient.objects.get(application__client_id="chain-demo")
    assert chain_client.token_endpoint_auth_method == "private_key_jwt" and chain_client.client_jwks["keys"]
    assert_private_key_jwt_only(sent, demo_var, result.issuer, 8)
    # ... and carried a DPoP proof each, as did the answer's POST: 8 assertions + 9 proofs.
    assert UsedJti.objects.count() == 8 + 9
    assert "client chain-demo (private_key_jwt, DPoP key " in out.getvalue()
    # Every code after the wallet's is bound to the run's DPoP key (alice's by dpop_jkt),
    # and so is the writer's token: the printed tree marks them.
    steps = ChainedGrant.objects.filter(root_id=result.chain_id)
    assert {s.kind for s in steps if not s.dpop_jkt} == {"wallet"}
    assert len({s.dpop_jkt for s in steps if s.dpop_jkt}) == 1
    tree = out.getvalue().split("\nChain ", 1)[1].split("\nIntegrity:", 1)[0]
    assert tree.count("[DPoP]") == 8 and "[exchanged]  [DPoP]" in tree
    assert DPoPBinding.objects.filter(kind="access").count() == 1

    # A second run (the example's own run(), unobserved) makes a new chain, with the same
    # wallet and the same (deterministic) conversation.
    again = agent_chat.run(live_server.url, var_dir=demo_var, out=io.StringIO())
    assert again.chain_id != result.chain_id
    assert ChainedGrant.objects.filter(depth=0).count() == 2 and Answer.objects.count() == 2
    assert again.transcript == result.transcript
    assert again.steps[0].actor == events[0].actor == HeadlessWallet.load(demo_var / "demo_wallet.json").did
    assert (
        ChainedGrant.objects.filter(root_id=again.chain_id).count() == 9 and integrity.verify_chain(again.chain_id).ok
    )


@pytest.mark.django_db(transaction=True)
def test_the_merger_is_one_join_of_all_three_branches(agent_chat, live_server, demo_var):
    """The fan-in: the merger's one hop is from the researcher's code with the security
    reviewer's and the implementer's as joined_codes; its proof names them (c_hash,
    joined_c_hashes, in order), its scope is within all three, and the review API, the
    printed tree and the database show one step with three parents."""
    out = io.StringIO()
    result = harness.run(live_server.url, var_dir=demo_var, out=out)
    rows = {str(r.pk): r for r in ChainedGrant.objects.filter(root_id=result.chain_id).select_related("agent")}
    branches = {review.actor_label(r): r for r in rows.values() if review.actor_label(r) in agent_chat.BRANCHES}
    (merger,) = [r for r in rows.values() if review.actor_label(r) == "merger"]

    parents = [merger.parent, *(rows[j["step"]] for j in merger.joined)]
    assert [review.actor_label(p) for p in parents] == list(agent_chat.BRANCHES)
    assert [p.pk for p in parents] == [branches[name].pk for name in agent_chat.BRANCHES]
    assert [j["link_hash"] for j in merger.joined] == [
        branches["security"].link_hash,
        branches["implementer"].link_hash,
    ]
    assert list(merger.joins.order_by("position").values_list("parent_id", flat=True)) == [p.pk for p in parents[1:]]
    assert merger.depth == 3 and all(p.depth == 2 for p in parents)

    # The proof binds every parent's code, in order.
    codes = {s.actor: s.code for s in result.steps if s.actor in agent_chat.BRANCHES}
    assert merger.proof_claims["c_hash"] == code_hash(codes["researcher"])
    assert merger.proof_claims["joined_c_hashes"] == [
        code_hash(codes["security"]),
        code_hash(codes["implementer"]),
    ]
    # Its scope is within every parent's (the intersection: "openid read").
    assert all(set(merger.scope.split()) <= set(p.scope.split()) for p in parents)
    assert merger.scope == "openid read"

    # The review API: one merger step, under its primary parent, naming the other two.
    api = {s["id"]: s for s in result.tree["steps"]}
    (step,) = [s for s in api.values() if s["actor"] == "merger"]
    assert step["parent"] == str(branches["researcher"].pk)
    assert [api[j]["actor"] for j in step["joined"]] == ["security", "implementer"]
    assert step["id"] in api[step["parent"]]["children"]
    assert all(step["id"] not in api[j]["children"] for j in step["joined"])
    (critic,) = [s for s in api.values() if s["actor"] == "critic"]
    assert critic["parent"] == step["id"] and critic["joined"] == []

    # The printed tree shows the merger once, with what it joins.
    tree = out.getvalue().split("\nChain ", 1)[1].split("\nIntegrity:", 1)[0]
    assert tree.count("agent merger") == 1 and "joins: security, implementer" in tree
    assert tree.count("→ joined into merger") == 2  # on the security reviewer's and the implementer's lines
    assert "[code_chain -> merger]" in out.getvalue() and out.getvalue().count("[code_chain -> merger]") == 1

    # An hour later, after housekeeping ran: a success, not a row of expired steps.
    later = timezone.now() + timedelta(hours=1)
    retention.expire_steps(now=later)
    with mock.patch("django.utils.timezone.now", return_value=later):
        states = {s["actor"]: s["state"] for s in review.chain_data(review.chain_view(result.chain_id))["steps"]}
    assert states.pop("writer") == "exchanged"
    assert set(states.values()) == {"handed_off"}, states
    assert not ChainedGrant.objects.filter(root_id=result.chain_id, expired_at__isnull=False).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_the_command_line_as_make_demo_runs_it(live_server, demo_var):
    """`scripts/agent_chat.py --idp URL --var DIR`, as scripts/run_dev.sh runs it: a file
    from a checkout (no PYTHONPATH), one conversation, then it exits 0."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--idp", live_server.url, "--var", str(demo_var)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Integrity: ✓ verified (9 steps" in result.stdout and not SECRET_LIKE.search(result.stdout)
    root = ChainedGrant.objects.get(depth=0)
    assert root.kind == "wallet" and ChainedGrant.objects.filter(root=root).count() == 9
    assert f"{live_server.url}/admin/chain_grant/chain/{root.pk}/tree/" in result.stdout


def test_the_command_line_documents_once_as_make_demos():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--idp URL" in result.stdout
    assert "--once is an option of scripts/run_dev.sh" in " ".join(result.stdout.split())
    refused = subprocess.run([sys.executable, str(SCRIPT), "--once"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unrecognized arguments: --once" in refused.stderr


@pytest.mark.django_db(transaction=True)
def test_through_several_addresses_of_one_idp_a_refusing_one_dropped(live_server, demo_var):
    """The harness's AddressPool (what the cluster run uses): one IdP name, three
    addresses, the first refusing connections. Requests go round-robin, the refusing
    address is dropped (the same request goes to the next), the run completes."""
    port = urllib.parse.urlsplit(live_server.url).port
    dead = f"http://127.0.0.1:{free_port()}"
    pool = AddressPool([dead, live_server.url, f"http://127.0.0.1:{port}"], name=live_server.url)
    out = io.StringIO()
    result = harness.run(pool=pool, var_dir=demo_var, out=out)
    assert pool.dropped == [dead] and pool.alive == [live_server.url, f"http://127.0.0.1:{port}"]
    assert all(pool.served[address] > 5 for address in pool.alive), pool.served
    assert "Integrity: ✓ verified (9 steps" in out.getvalue() and not SECRET_LIKE.search(out.getvalue())
    assert len(result.events) == 9 and ChainedGrant.objects.filter(root=result.chain_id).count() == 9
    assert result.admin_url == f"{live_server.url}/admin/chain_grant/chain/{result.chain_id}/tree/"


@pytest.mark.django_db
def test_idp_down_is_a_clear_error(agent_chat, demo_var):
    out, err = io.StringIO(), io.StringIO()
    dead = f"http://127.0.0.1:{free_port()}"
    status = agent_chat.main(["--idp", dead, "--var", str(demo_var)], out=out, err=err)
    assert status == agent_chat.EXIT_UNREACHABLE == 3
    assert f"cannot reach the IdP at {dead} (connection refused)" in err.getvalue()
    assert "make run" in err.getvalue() and not ChainedGrant.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_client_secret_auth_needs_bootstrap_demo_secret(agent_chat, live_server, demo_var, sent):
    """--client-secret-auth: HTTP Basic with the client secret, for comparison. The demo
    client is key-only, so the IdP refuses the first hop (invalid_client) and the error
    says what to do; after ``bootstrap_demo --secret`` the same run completes, with the
    secret and no assertion."""
    out, err = io.StringIO(), io.StringIO()
    args = ["--idp", live_server.url, "--var", str(demo_var), "--client-secret-auth", "--no-dpop"]  # the old mode
    assert agent_chat.main(args, out=out, err=err) == 1
    message = err.getvalue()
    assert "→ planner (step 1): invalid_client" in message
    assert (
        "`manage.py bootstrap_demo --secret`" in message
        and "client chain-demo (client secret, no DPoP)" in out.getvalue()
    )
    assert not ChainedGrant.objects.filter(kind="agent").exists()

    call_command("bootstrap_demo", "--secret", stdout=io.StringIO())
    assert ChainClient.objects.get(application__client_id="chain-demo").token_endpoint_auth_method == ""
    sent.clear()
    out, err = io.StringIO(), io.StringIO()
    assert agent_chat.main(args, out=out, err=err) == 0, err.getvalue()
    assert "Integrity: ✓ verified (9 steps" in out.getvalue() and not SECRET_LIKE.search(out.getvalue())
    requests = token_requests(sent)
    assert len(requests) == 8 and not UsedJti.objects.exists()
    assert all(h["authorization"].startswith("Basic ") and "client_assertion" not in f for h, f in requests)

    # With the secret accepted too, the default (private_key_jwt) still works; bootstrap_demo
    # keeps the client as it is (`make demo` runs it) until --key-only.
    call_command("bootstrap_demo", stdout=io.StringIO())
    sent.clear()
    result = agent_chat.run(live_server.url, var_dir=demo_var, out=io.StringIO())
    assert_private_key_jwt_only(sent, demo_var, result.issuer, 8)
    assert ChainClient.objects.get(application__client_id="chain-demo").token_endpoint_auth_method == ""
    call_command("bootstrap_demo", "--key-only", stdout=io.StringIO())
    assert agent_chat.main(args, out=io.StringIO(), err=io.StringIO()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_client_key_the_idp_does_not_know_stops_the_run(agent_chat, live_server, demo_var):
    """var/clients/chain-demo.json replaced by another key: the first hop is invalid_client,
    and the error names the key file."""
    key_path = demo_var / "clients" / "chain-demo.json"
    key_path.write_text(json.dumps(generate_key("EC").export(as_dict=True, private_key=True)))
    out, err = io.StringIO(), io.StringIO()
    assert agent_chat.main(["--idp", live_server.url, "--var", str(demo_var)], out=out, err=err) == 1
    message = err.getvalue()
    assert "→ planner (step 1): invalid_client" in message and str(key_path) in message
    assert not ChainedGrant.objects.filter(kind="agent").exists()

    key_path.unlink()  # no client key at all: a setup error, before any request
    err = io.StringIO()
    assert agent_chat.main(["--idp", live_server.url, "--var", str(demo_var)], out=io.StringIO(), err=err) == 2
    assert "client key" in err.getvalue() and "make demo-data" in err.getvalue()


def test_missing_demo_files_is_a_clear_error(agent_chat, tmp_path):
    err = io.StringIO()
    assert agent_chat.main(["--var", str(tmp_path)], out=io.StringIO(), err=err) == 2
    assert "no demo credentials" in err.getvalue() and "make demo-data" in err.getvalue()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("after", "refused", "steps"),
    [
        (4, "the IdP refused the hand-off researcher + security + implementer → merger (step 5): invalid_grant", 5),
        (6, "alice's consent: invalid_request", 7),
    ],
)
def test_a_chain_revoked_midway_stops_the_run(agent_chat, live_server, demo_var, after, refused, steps):
    """An auditor revokes the chain while the agents work: the next hand-off (an agent's
    code_chain, or alice's consent on the authorize endpoint) is refused."""

    def revoke(event):
        if event.index == after:
            lifecycle.revoke_subtree(ChainedGrant.objects.get(pk=event.chain_id), "revoked by an auditor")

    out = io.StringIO()
    with pytest.raises(agent_chat.AgentChatError) as failure:
        harness.run(live_server.url, var_dir=demo_var, on_step=revoke, out=out)
    assert failure.value.exit_code == 1, out.getvalue()
    message = str(failure.value)
    assert refused in message and "was revoked" in message and "start a new run" in message
    root = ChainedGrant.objects.get(depth=0)
    assert failure.value.admin_url == f"{live_server.url}/admin/chain_grant/chain/{root.pk}/tree/"
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
    assert "refused the hand-off merger → critic (step 6): invalid_grant" in message
    assert "the agent is disabled" in message
    root = ChainedGrant.objects.get(depth=0)
    assert f"agent_chat: the chain so far: {live_server.url}/admin/chain_grant/chain/{root.pk}/tree/" in message
    assert not ChainedGrant.objects.filter(agent__identifier="critic").exists()
    assert ChainedGrant.objects.count() == 6 and not Answer.objects.exists()


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
    password = json.loads((demo_var / "demo_credentials.json").read_text())["alice_password"]
    person, opened = headless_person(live_server.url, login=("alice", password), wallet=HeadlessWallet.generate())
    monkeypatch.setattr(agent_chat.webbrowser, "open", person)
    monkeypatch.setattr(agent_chat, "INTERACTIVE_TIMEOUT", 60)
    out = io.StringIO()
    result = agent_chat.run(live_server.url, var_dir=demo_var, interactive=True, out=out)
    assert [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(u).query))["response_type"] for u in opened] == [
        "id_token",
        "code",
    ]
    assert "Waiting for the redirect to http://127.0.0.1:8765/oauth-callback" in out.getvalue()
    assert not SECRET_LIKE.search(out.getvalue())
    kinds = [s["kind"] for s in result.tree["steps"]]
    assert kinds.count("wallet") == 1 and kinds.count("user") == 1 and len(kinds) == 9
    assert result.verification["ok"] and Answer.objects.get().chain_id.hex == result.chain_id.replace("-", "")
