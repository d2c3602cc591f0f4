#!/usr/bin/env python3
"""The agent chat example: one multi-agent conversation, one auditable chain of codes.

The conversation of Boruta's code-chain PoC (PR 153), against an IdP with chain_grant
(``make demo`` starts one and runs this), top to bottom in ``Chat.converse``::

    user ─(wallet)─► planner ─┬─► researcher  ─┐
                              ├─► security    ─┼─► merger ─► critic
                              └─► implementer ─┘
    critic ─(alice logs in, consents to email)─► writer ─► POST /api/answers/

The merger is one join (fan-in): a single hop from the researcher's code that also names
the other two branches' codes (``joined_codes``; its proof carries their c_hashes), so
its scope is within all three; 9 steps in all.

An agent needs only the SDK, ``chain_grant.client`` (``sdk`` below): its key
(``load_private_key``: var/agents/<name>.json from bootstrap_demo), a proof per hand-off
(``sign_proof``: sub, aud, jti, c_hash bound to the previous code, msg_sha256 of the
message received), PKCE (``pkce_pair``), the hand-off (``code_chain``) and, for the one
agent that acts, ``exchange_code``. Every one of those calls authenticates the demo client
with its own key (``PrivateKeyJWT``: a fresh private_key_jwt assertion per request,
RFC 7523; var/clients/chain-demo.json from bootstrap_demo, which registers the client
key-only): no client secret on the agent path. Every hop and the exchange also carry a
DPoP proof (``DPoPKey``, RFC 9449) by a key this process holds, so each hop's code and
the writer's token are bound to it (alice's consent step too, through ``dpop_jkt``) and
the printed tree marks them ``[DPoP]``; ``--no-dpop`` leaves them bearer codes.
``--client-secret-auth`` sends the client secret instead (HTTP Basic), for comparison:
it needs ``manage.py bootstrap_demo --secret`` first, which lets the client use its
secret too (until ``--key-only``).

The person's steps (the wallet presentation, alice's consent) need a browser: ``Browser``
here has no screen (a cookie jar, the IdP's own forms, the SDK's ``HeadlessWallet``);
``--interactive`` uses yours. Codes and tokens are printed as their first 6 characters
and "…", never whole. The agents are canned (no LLM, no network); ``--llm
module:function`` plugs in a real one (docs/demo.md).

    chat = run("http://127.0.0.1:8000", var_dir="var")  # chat.chain_id, .tree, .answer, ...
"""

import argparse
import hashlib
import html.parser
import http.server
import importlib
import json
import os
import re
import secrets
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

try:
    import chain_grant  # noqa: F401
except ImportError:  # run as a file from a checkout: scripts/ is on sys.path, not the repository
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import chain_grant.client as sdk  # noqa: E402
from chain_grant.client.wallet import HeadlessWallet, request_url_from_html  # noqa: E402

DEFAULT_IDP = "http://127.0.0.1:8000"
CLIENT_KEY = "clients/chain-demo.json"  # the demo client's private key in bootstrap_demo's var dir
REDIRECT_URI = "http://127.0.0.1:8765/oauth-callback"  # the demo client's; --interactive listens there
ROOT_SCOPE, CONSENT_SCOPE = "openid profile read write", "email"  # the wallet's grant; what alice adds
DEFAULT_QUESTION = "How can AI agents act for our users without ever holding their passwords?"
BRANCHES = ("researcher", "security", "implementer")
INTERACTIVE_TIMEOUT = 600  # seconds --interactive waits for your browser
EXIT_REFUSED, EXIT_SETUP, EXIT_UNREACHABLE = 1, 2, 3

ROLES = {  # each agent's instructions: the system prompt of a plugged-in LLM
    "planner": "You plan. Split the person's question into three tasks: research, security, implementation.",
    "researcher": "You research. Say what exists today that answers your task, with the standards involved.",
    "security": "You review security. List what can go wrong and the safeguard for each risk.",
    "implementer": "You implement. Give the concrete steps to build it.",
    "merger": "You merge. Combine the three contributions into one draft without losing a point.",
    "critic": "You criticise. Say what the draft misses before it goes to the person.",
    "writer": "You write the final answer for the person, taking the review into account.",
}
CANNED = {
    "researcher": "Delegation is a solved pattern: OAuth 2.0 authorization codes with PKCE, OpenID Connect "
    "id_tokens to prove who signs, RFC 8693 `act` claims to name the actors, and SIOPv2 wallets for people "
    "who hold their own keys.",
    "security": "Risks and safeguards: a stolen code (PKCE per hop, 10-minute codes); an agent exceeding its "
    "remit (scopes only narrow at each hop); a replayed hand-off (single-use jti, c_hash bound to the previous "
    "code); a forged agent (only registered keys count).",
    "implementer": "Steps: register each agent's public key with the IdP; pass one authorization code from "
    "agent to agent with grant_type=code_chain; ask the person before any new scope; exchange only the code "
    "of the agent that must act.",
    "critic": "Review: the draft covers standards, risks and steps. It must also say that the person stays in "
    "control (consent is the only way to add a scope) and that the whole conversation can be audited "
    "afterwards, step by step.",
    "writer": "Let each agent act through its own link of one authorization code chain. The person starts it "
    "(here with a wallet), every hand-off is signed by the receiving agent's registered key and bound to the "
    "previous code, scopes only narrow from agent to agent, and only the person adds one (here: email, by "
    "consent). No agent ever sees a password, and an auditor can read the whole conversation back as a tree "
    "of codes.",
}


def local_responder(agent: str, instructions: str, message: str) -> str:
    """The built-in agents: canned, deterministic text (no LLM, no network)."""
    if agent == "planner":
        return (
            f"Plan for “{(message.strip().splitlines() or ['the question'])[0]}”: the researcher finds what "
            "exists, the security reviewer finds what can go wrong, the implementer says how to build it; "
            "the merger joins them and the critic checks."
        )
    if agent == "merger":  # "- agent: text" lines → one draft
        return "Draft: " + " ".join(line.split(": ", 1)[-1] for line in message.splitlines() if line.startswith("- "))
    return CANNED[agent]


class AgentChatError(Exception):
    """The run stopped: the message says why, ``exit_code`` is the process status."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED):
        super().__init__(message)
        self.exit_code, self.admin_url = exit_code, None  # admin_url: the chain so far, if any


@dataclass
class Step:  # one link of the chain, as this client saw it
    index: int
    kind: str  # wallet | agent | user
    actor: str
    depth: int
    parent: int | None  # the parent step's index
    code: str = field(repr=False)
    verifier: str = field(repr=False)  # PKCE for this step's code: only the writer's is used
    scope: str | None = None  # as the IdP granted it (agent steps)
    message_sha256: str | None = None  # agent steps: the msg_sha256 its proof signed
    joined: tuple[int, ...] = ()  # a join: the other parents' indexes (``parent`` is the primary)

    @property
    def code_digest_prefix(self) -> str:  # how the admin and the review API name a step
        return hashlib.sha256(self.code.encode()).hexdigest()[:8]


@dataclass
class Chat:
    """One conversation against one IdP: ``Chat(...).run()`` (or ``run(...)``) once."""

    idp: str = DEFAULT_IDP
    var_dir: str | os.PathLike | None = None  # bootstrap_demo's: default $IDP_VAR_DIR, else var
    interactive: bool = False
    out: TextIO | None = None
    question: str = DEFAULT_QUESTION
    responder: Callable[[str, str, str], str] = local_responder
    client_secret_auth: bool = False  # the client secret (HTTP Basic) instead of private_key_jwt
    dpop: bool = True  # bind every hop's code and the writer's token to this run's DPoP key (RFC 9449)

    def __post_init__(self):
        self.idp, self.out = self.idp.rstrip("/"), self.out or sys.stdout
        self.var = Path(self.var_dir or os.environ.get("IDP_VAR_DIR") or "var")
        self.steps: list[Step] = []
        self.transcript: list[tuple[str, str, str]] = []  # (from, to, text)
        self.chain_id = None
        self.dpop_key = sdk.DPoPKey(sdk.generate_key("EC")) if self.dpop else None  # held by this process only
        try:
            self.creds = json.loads((self.var / "demo_credentials.json").read_text())
            self.client_id = self.creds["client_id"]
            if self.client_secret_auth:
                self.client_secret, self.client_key = self.creds["client_secret"], None
            else:  # the client's private key: its assertions (run() adds the issuer, their aud)
                self.client_secret = None
                self.client_key = sdk.load_private_key(str(self.var / self.creds.get("client_key", CLIENT_KEY)))
            self.keys = {name: sdk.load_private_key(str(self.var / "agents" / f"{name}.json")) for name in ROLES}
        except (OSError, ValueError, KeyError) as exc:
            message = (
                f"no demo credentials, client key or agent keys in {self.var} ({exc}): "
                "run `make demo-data`, or pass --var"
            )
            raise AgentChatError(message, EXIT_SETUP) from None

    def converse(self) -> tuple[Step, str]:
        """Each message an agent receives is one hand-off, signed by that agent (msg_sha256):
        the chain doubles as the conversation's audit log."""
        planner = self.hop(self.wallet_step(), "user", "planner", self.question)
        plan = self.respond("planner", self.question)
        outputs = {}
        for agent in BRANCHES:  # the fan-out: three children of the planner's code
            task = f"{plan}\nYour task ({agent}): {ROLES[agent]}"
            shown = f"{plan} [your task: {agent}]" if agent == BRANCHES[0] else f"… [your task: {agent}]"
            outputs[agent] = (self.hop(planner, "planner", agent, task, shown), self.respond(agent, task))
        # The fan-in: one join hop, from the first branch's code, naming the other two branches' codes.
        contributions = "\n".join(f"- {agent}: {text}" for agent, (_, text) in outputs.items())
        first, *others = (step for step, _ in outputs.values())
        merger = self.hop(first, " + ".join(BRANCHES), "merger", contributions, joined=others)
        draft = self.respond("merger", contributions)
        critic = self.hop(merger, "merger", "critic", draft)
        review = self.respond("critic", draft)
        brief = f"{draft}\n{review}"
        writer = self.hop(self.consent_step(critic), "critic", "writer", brief, f"[the draft] + {review}")
        answer = self.respond("writer", brief)
        self.say_message("writer", "user", answer)
        return writer, answer

    def wallet_step(self) -> Step:
        """The root: a wallet presents itself (a SIOPv2 self-issued id_token) on the authorize endpoint."""
        self.say("[browser -> wallet presentation]")
        wallet = None
        if not self.interactive:  # the headless wallet keeps its key: every run, the same holder
            path = self.var / "demo_wallet.json"
            wallet = HeadlessWallet.load(path) if path.exists() else HeadlessWallet.generate()
            wallet.save(path)
            self.say(
                f"  GET {self.authorize_path} response_type=id_token scope=“{ROOT_SCOPE}” (PKCE S256); "
                f"headless wallet {short(wallet.did, 28)} answers the openid:// request"
            )
        params = {"response_type": "id_token", "scope": ROOT_SCOPE, "client_metadata": "{}", "prompt": "login"}
        code, verifier = self.authorize("the wallet presentation", self.browser(wallet=wallet), params)
        self.say(f"[id_token presentation -> planner]  {mask(code)}  (the chain's root)")
        return self.record("wallet", wallet.did if wallet else "wallet", code, verifier, None, depth=0)

    def hop(self, parent: Step, sender: str, agent: str, message: str, shown=None, joined=()) -> Step:
        """``agent`` receives ``message`` with ``parent``'s code; it signs a proof and trades both for its code.
        A join (fan-in) also hands over the ``joined`` steps' codes: the proof names each (joined_c_hashes)."""
        verifier, challenge = sdk.pkce_pair()
        joined_codes = [step.code for step in joined] or None
        proof = sdk.sign_proof(
            self.keys[agent], sub=agent, aud=self.issuer, code=parent.code, message=message, joined_codes=joined_codes
        )
        try:
            body = sdk.code_chain(
                self.token_url,
                *self.client,
                parent.code,
                proof,
                code_challenge=challenge,
                joined_codes=joined_codes,
                dpop=self.dpop_key,
            )
        except sdk.ChainClientError as exc:
            senders = " + ".join(short(step.actor) for step in (parent, *joined))
            raise AgentChatError(
                f"the IdP refused the hand-off {senders} → {agent} (step "
                f"{len(self.steps)}): {exc.error}: {exc.description}{self.hint(exc)}"
            ) from None
        self.chain_id = self.chain_id or body["chain_id"]  # the root step's id, told with the first hop
        code, depth, scope = body["authorization_code"], body["depth"], body.get("scope")
        codes = " + ".join(mask(step.code) for step in (parent, *joined))
        join = f"  (a join of {len(joined) + 1} parents)" if joined else ""
        self.say(f"[code_chain -> {agent}]  {codes} → {mask(code)}  depth {depth}, scope “{scope}”{join}")
        self.say_message(sender, agent, message, shown)
        digest = sdk.message_digest(message)
        return self.record("agent", agent, code, verifier, parent, depth, scope, digest, joined=joined)

    def consent_step(self, parent: Step, person: str = "alice") -> Step:
        """A person joins: logs in, sees the chain so far and consents to one scope more."""
        self.say("[browser -> chained authorization code request]")
        if self.interactive:
            self.say(f"  log in as {person} (password in {self.var / 'demo_credentials.json'}) and consent")
        else:
            self.say(
                f"  GET {self.authorize_path} response_type=code scope=“{CONSENT_SCOPE}” "
                f"code={mask(parent.code)} prompt=login; {person} logs in and consents"
            )
        params = {"response_type": "code", "scope": CONSENT_SCOPE, "code": parent.code, "prompt": "login"}
        if self.dpop_key is not None:  # RFC 9449 §10: the person's new code stays bound to the key
            params["dpop_jkt"] = self.dpop_key.jkt
        browser = self.browser(login=(person, self.creds["alice_password"]))
        code, verifier = self.authorize(f"{person}'s consent", browser, params)
        self.say(
            f"[authorization code request -> writer]  {mask(parent.code)} → {mask(code)}  "
            f"depth {parent.depth + 1}, {person} consented to “{CONSENT_SCOPE}”"
        )
        return self.record("user", person, code, verifier, parent, parent.depth + 1)

    def publish(self, writer: Step, answer: str) -> None:
        """The writer trades its code for a token (its scope only) and posts the answer with it."""
        try:
            token = sdk.exchange_code(
                self.token_url,
                *self.client,
                writer.code,
                redirect_uri=REDIRECT_URI,
                code_verifier=writer.verifier,
                dpop=self.dpop_key,
            )
        except sdk.ChainClientError as exc:
            raise AgentChatError(
                f"exchanging the writer's code failed: {exc.error}: {exc.description}{self.hint(exc)}"
            ) from None
        access, self.token_scope = token["access_token"], token.get("scope", "")
        self.say(
            f"[exchange -> writer's token]  code {mask(writer.code)} → access token {mask(access)}  "
            f"scope “{self.token_scope}”"
        )
        url = f"{self.idp}/api/answers/"
        if self.dpop_key is not None:  # a DPoP-bound token: the proof names this request and the token
            headers = {**self.dpop_key.headers(access, "POST", url), "Content-Type": "application/json"}
        else:
            headers = {"Authorization": f"Bearer {access}", "Content-Type": "application/json"}
        request = urllib.request.Request(url, json.dumps({"text": answer}).encode(), headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            self.answer = json.load(response)
        actors = [a["actor"] if a["kind"] != "wallet" else short(a["actor"], 20) for a in self.answer["actors"]]
        self.say(
            f"[writer -> POST /api/answers/]  answer #{self.answer['id']} stored with its actor chain: "
            + " ← ".join(reversed(actors))
        )

    def review(self) -> None:
        """The chain read back through the review API as admin (a staff session: no back door)."""
        browser = self.browser(login=("admin", self.creds["admin_password"]))
        browser.visit(f"/accounts/login/?next=/api/chains/{self.chain_id}/", "the admin login")
        results = []
        for suffix in ("", "verify/"):
            status, _, body, _ = browser.send(f"/api/chains/{self.chain_id}/{suffix}", Accept="application/json")
            if status != 200:
                raise AgentChatError(f"the review API answered HTTP {status}")
            results.append(json.loads(body))
        self.tree, self.verification = results

    def run(self) -> "Chat":
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"{self.idp}/oauth/.well-known/openid-configuration", timeout=30) as response:
                meta = json.load(response)  # OpenID discovery: the issuer (every proof's aud), the endpoints
            if "code_chain" not in meta.get("grant_types_supported", []):
                raise AgentChatError("the IdP does not advertise grant_type=code_chain (is chain_grant installed?)")
            self.issuer, self.token_url = meta["issuer"], meta["token_endpoint"]
            self.authorize_url = meta["authorization_endpoint"]
            self.authorize_path = urllib.parse.urlsplit(self.authorize_url).path
            if self.client_key is not None:  # a fresh assertion per request, aud = the issuer
                self.client = (self.client_id, sdk.PrivateKeyJWT(self.client_key, self.client_id, self.issuer))
            else:
                self.client = (self.client_id, self.client_secret)
            auth = "client secret" if self.client_key is None else "private_key_jwt"
            auth += f", DPoP key {self.dpop_key.jkt[:8]}…" if self.dpop_key is not None else ", no DPoP"
            self.say(f"==> IdP {self.idp}  issuer {self.issuer}  client {self.client_id} ({auth})")
            self.publish(*self.converse())
            self.review()
        except (AgentChatError, urllib.error.URLError) as exc:
            error = exc if isinstance(exc, AgentChatError) else transport_error(self.idp, exc)
            error.admin_url = self.admin_url
            raise error from None
        steps, verification = self.tree["steps"], self.verification
        self.say(f"\nChain {self.chain_id}  ({len(steps)} steps, depth {max(s['depth'] for s in steps)})")
        for line in tree_lines(steps):
            self.say("  " + line)
        if not verification["ok"]:
            for problem in verification.get("problems", []):
                self.say(f"Integrity: ✗ {problem['step'] or 'chain'}: {problem['problem']}")
            raise AgentChatError(f"the chain does not verify: first bad step {verification['first_bad_step']}")
        checked = verification["checked"]
        self.say(f"Integrity: ✓ verified ({checked} steps: link hashes, signed records, events and head)")
        self.say(f"Admin: {self.admin_url}  (log in as admin)")
        self.say(f"Done in {time.monotonic() - started:.1f} s: {len(self.steps)} steps, answer #{self.answer['id']}.")
        return self

    # -- helpers --

    def hint(self, exc: "sdk.ChainClientError") -> str:
        """What a refusal means, with what to do about it."""
        if exc.error != "invalid_client":
            return hint(exc.description)
        if self.client_key is None:
            return (
                " — the demo client is key-only (private_key_jwt): run `manage.py bootstrap_demo --secret` "
                "to let it use its secret too (until `bootstrap_demo --key-only`), or drop --client-secret-auth"
            )
        return f" — is {self.var / self.creds.get('client_key', CLIENT_KEY)} the key registered? (`make demo-data`)"

    def authorize(self, what: str, browser: "Browser", params: dict[str, str]) -> tuple[str, str]:
        """A person's step on the authorize endpoint, in a browser → (the code, its PKCE verifier)."""
        state, (verifier, challenge) = secrets.token_urlsafe(16), sdk.pkce_pair()
        query = {"client_id": self.client_id, "redirect_uri": REDIRECT_URI, "state": state, **params}
        query.update(code_challenge=challenge, code_challenge_method="S256")
        url = f"{self.authorize_url}?{urllib.parse.urlencode(query)}"
        if self.interactive:
            return in_your_browser(url, state, what, self.say), verifier
        return browser.authorize(url, state, what), verifier

    def browser(self, **kwargs) -> "Browser":
        return Browser(self.idp, also=(self.issuer, self.authorize_url), **kwargs)

    def record(self, kind, actor, code, verifier, parent, depth, scope=None, message_sha256=None, joined=()) -> Step:
        parent_index = parent.index if parent else None
        others = tuple(step.index for step in joined)
        self.steps.append(
            Step(len(self.steps), kind, actor, depth, parent_index, code, verifier, scope, message_sha256, others)
        )
        return self.steps[-1]

    def respond(self, agent: str, message: str) -> str:
        text = self.responder(agent, ROLES[agent], message)
        if not isinstance(text, str) or not text.strip():
            raise AgentChatError(f"the responder gave {agent} no text")
        return text.strip()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def say_message(self, sender: str, receiver: str, text: str, shown: str | None = None) -> None:
        """A message: kept whole in the transcript, printed wrapped (maybe abridged)."""
        self.transcript.append((sender, receiver, text))
        self.say(
            textwrap.fill(shown or text, 100, initial_indent=f"  {sender} → {receiver}: ", subsequent_indent="    ")
        )

    @property
    def admin_url(self) -> str | None:
        return f"{self.idp}/admin/chain_grant/chain/{self.chain_id}/tree/" if self.chain_id else None


def run(idp: str = DEFAULT_IDP, **options) -> Chat:
    """One conversation, one chain (``options``: ``Chat``'s fields); raises AgentChatError when a step fails."""
    return Chat(idp, **options).run()


# --- the person's browser ---------------------------------------------------------------------


class Forms(html.parser.HTMLParser):
    """A page's forms: id, action and the fields a browser posts (not the submit buttons)."""

    def __init__(self, page: str):
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"id": a.get("id"), "action": a.get("action") or "", "fields": {}})
        elif tag == "input" and self.forms and a.get("name") and a.get("type") != "submit":
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""

    def find(self, *, form_id: str | None = None, with_field: str | None = None) -> dict[str, Any] | None:
        return next((f for f in self.forms if (form_id and f["id"] == form_id) or with_field in f["fields"]), None)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):  # the browser follows redirects itself (Browser.visit)
        return None


class Browser:
    """A browser without a screen: a cookie jar, the IdP's login and consent forms posted
    with their CSRF token (and the Origin a browser sends), a wallet for wallet requests,
    redirects followed only inside the IdP, up to the client's redirect_uri."""

    def __init__(self, idp: str, *, login=None, wallet: HeadlessWallet | None = None, also: tuple[str, ...] = ()):
        self.idp, self.login, self.wallet = idp.rstrip("/"), login, wallet
        self.origins = {origin(url) for url in (idp, *also)}
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(), NoRedirect())

    def send(self, url: str, form: dict[str, str] | None = None, **headers: str):
        """GET ``url`` (absolute, or relative to the IdP), or POST ``form`` → (status, headers, body, url)."""
        url = urllib.parse.urljoin(self.idp + "/", url)
        if form is not None:
            headers.update(Origin=origin(url), Referer=url)
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            response = self.opener.open(urllib.request.Request(url, data, headers), timeout=30)
        except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx: a page like any other
            response = exc
        with response:
            return response.getcode(), response.headers, response.read().decode(errors="replace"), url

    def visit(self, url: str, what: str) -> tuple[str, str]:
        """Go to ``url`` as a person does: follow the IdP's redirects, let the wallet answer, log in
        and consent when asked → (the client's redirect_uri, "") or (url, the page that asks nothing)."""
        form, asked = None, set()
        for _ in range(20):
            if url.split("?")[0] == REDIRECT_URI:
                return url, ""
            status, headers, page, url = self.send(url, form)
            form, forms = None, Forms(page)
            if status in (301, 302, 303):
                url = urllib.parse.urljoin(url, headers["Location"])
                if origin(url) not in self.origins and url.split("?")[0] != REDIRECT_URI:
                    raise AgentChatError(f"{what}: the IdP redirected outside itself ({origin(url)})")
            elif status != 200:
                raise AgentChatError(f"{what}: the IdP answered HTTP {status} ({page_error(page)})")
            elif self.wallet and 'id="wallet-request"' in page and "wallet" not in asked:
                asked.add("wallet")
                try:  # a self-issued id_token, POSTed to the IdP (direct_post); the browser goes where it says
                    url = self.wallet.respond(request_url_from_html(page))
                except (sdk.ChainClientError, ValueError) as exc:
                    raise AgentChatError(f"{what}: the wallet presentation was refused ({exc})") from None
            elif login := forms.find(with_field="password"):
                if not self.login or "login" in asked:
                    raise AgentChatError(f"{what}: logging in failed (stale demo_credentials.json? `make demo-data`)")
                asked.add("login")
                url = urllib.parse.urljoin(url, login["action"])
                form = {**login["fields"], "username": self.login[0], "password": self.login[1]}
            elif (consent := forms.find(form_id="authorizationForm")) and "consent" not in asked:
                asked.add("consent")
                url, form = urllib.parse.urljoin(url, consent["action"]), {**consent["fields"], "allow": "Authorize"}
            else:
                return url, page
        raise AgentChatError(f"{what}: too many redirects")

    def authorize(self, url: str, state: str, what: str) -> str:
        """An authorize URL, followed to the client's redirect_uri → the code."""
        landed, page = self.visit(url, what)
        if page:
            raise AgentChatError(f"{what}: the IdP showed {page_error(page)!r}")
        return read_callback(landed, state, what)


def read_callback(url: str, state: str, what: str) -> str:
    """The client's end of the redirect: the state must be ours → the code (or the error)."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if query.get("state") != state:
        raise AgentChatError(f"{what}: the redirect's state does not match the request (possible CSRF)")
    if "error" in query:
        description = query.get("error_description", "")
        raise AgentChatError(
            f"{what}: {query['error']}" + (f": {description}" if description else "") + hint(description)
        )
    if not query.get("code"):
        raise AgentChatError(f"{what}: the redirect carries no code")
    return query["code"]


def in_your_browser(url: str, state: str, what: str, say) -> str:
    """--interactive: your browser opens ``url``; its redirect comes back to REDIRECT_URI → the code."""
    callback, landed = urllib.parse.urlsplit(REDIRECT_URI), threading.Event()

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            query = urllib.parse.urlsplit(self.path).query
            if not self.path.startswith(callback.path) or dict(urllib.parse.parse_qsl(query)).get("state") != state:
                return self.send_error(404)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"Done: you can close this tab.")
            landed.url = f"{REDIRECT_URI}?{query}"
            landed.set()

        def log_message(self, *args):  # the query holds the code: never logged
            pass

    try:
        server = http.server.HTTPServer((callback.hostname, callback.port), Listener)
    except OSError as exc:
        raise AgentChatError(f"cannot listen on {callback.netloc} for the callback ({exc})", EXIT_SETUP) from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        say(f"Opening {url.split('?')[0]}?…&response_type={query['response_type']}&scope={query['scope']}")
        say(f"Complete the {what} in your browser. Waiting for the redirect to {REDIRECT_URI} …")
        webbrowser.open(url)
        if not landed.wait(INTERACTIVE_TIMEOUT):
            raise AgentChatError(f"{what}: no redirect within {INTERACTIVE_TIMEOUT} s")
    finally:
        server.shutdown()
        server.server_close()
    return read_callback(landed.url, state, what)


# --- output and errors ------------------------------------------------------------------------


def tree_lines(steps: list[dict[str, Any]]) -> list[str]:
    """The chain as an indented tree: ``kind actor  “scope”  (+added −narrowed)`` per step. A join
    (a DAG's fan-in) sits under its primary parent and names the others (``joins: a, b``); each
    of them says where it went (``→ joined into j``)."""
    by_id, lines = {s["id"]: s for s in steps}, []
    joined_into = {j: [s for s in steps if j in (s.get("joined") or [])] for j in by_id}

    def label(s):
        return short(s["actor"], 28) if s["kind"] == "wallet" else s["actor"]

    def walk(s, prefix, branch):
        diff = " ".join([f"+{x}" for x in s.get("scope_added", [])] + [f"−{x}" for x in s.get("scope_narrowed", [])])
        joins = ", ".join(label(by_id[j]) if j in by_id else j[:8] for j in s.get("joined") or [])
        into = ", ".join(label(j) for j in joined_into[s["id"]])
        state = f"  [{s['state']}]" if s.get("state") not in (None, "live") else ""
        state += "  [DPoP]" if s.get("dpop_jkt") else ""
        lines.append(
            f"{prefix}{branch}{s['kind']} {label(s)}  “{s['scope']}”{f'  ({diff})' if diff else ''}"
            f"{f'  joins: {joins}' if joins else ''}{f'  → joined into {into}' if into else ''}{state}"
        )
        kids = [by_id[c] for c in s.get("children", []) if c in by_id]
        for i, kid in enumerate(kids):
            walk(kid, prefix + {"": "", "└─ ": "   ", "├─ ": "│  "}[branch], "└─ " if i == len(kids) - 1 else "├─ ")

    for root in (s for s in steps if not s["parent"]):
        walk(root, "", "")
    return lines


def mask(secret: str) -> str:
    return secret[:6] + "…"


def short(text: str, width: int = 24) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def origin(url: str) -> str:
    return "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(url)).lower()


def page_error(page: str) -> str:
    match = re.search(r"<h[12]>(.*?)</h[12]>\s*<p>(.*?)</p>", page, re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", ": ".join(match.groups())).split()) if match else "an unexpected page"


def hint(description: str) -> str:
    text = description.lower()
    if "revoked" in text:
        return " — the chain (or this branch) was revoked, e.g. in the admin; start a new run"
    if "not an active agent" in text or "not one of the agent's active keys" in text:
        return " — the agent is disabled or its key was rotated (`manage.py chain_grant_agent list`)"
    return " — codes live 10 minutes (CODE_EXPIRE_SECONDS)" if "expired" in text else ""


def transport_error(idp: str, exc: urllib.error.URLError) -> AgentChatError:
    if isinstance(exc, urllib.error.HTTPError):
        return AgentChatError(f"the IdP answered HTTP {exc.code} at {urllib.parse.urlsplit(exc.url).path}")
    reason = "connection refused" if isinstance(exc.reason, ConnectionRefusedError) else exc.reason
    return AgentChatError(
        f"cannot reach the IdP at {idp} ({reason}). Is it running? Start it with `make run`, "
        "or run the whole demo with `make demo`.",
        EXIT_UNREACHABLE,
    )


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The agent chat example: one conversation (wallet → agents → alice's consent → writer) "
        "against a running IdP, one auditable chain; then it exits.",
        epilog="Exit status: 0 done; 1 the IdP refused a step or a check failed; 2 bad arguments or missing "
        "demo files; 3 no IdP reachable. `make demo` starts an IdP and runs this against it, then keeps the "
        "IdP up for the admin; `make demo ARGS=--once` stops it after the run instead (--once is an option of "
        "scripts/run_dev.sh, not of this script).",
    )
    parser.add_argument("--idp", metavar="URL", default=DEFAULT_IDP, help=f"the IdP (default {DEFAULT_IDP})")
    parser.add_argument("--var", metavar="DIR", help="bootstrap_demo's var dir (default $IDP_VAR_DIR, else var)")
    parser.add_argument("--interactive", action="store_true", help="your browser does the wallet and consent steps")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="what the person asks the planner")
    parser.add_argument(
        "--llm",
        metavar="MODULE:FUNCTION",
        default=os.environ.get("AGENT_CHAT_LLM"),
        help="a real LLM: FUNCTION(agent, instructions, message) -> str; also $AGENT_CHAT_LLM",
    )
    parser.add_argument(
        "--no-dpop",
        action="store_true",
        help="do not bind codes and the token to a DPoP key (RFC 9449): bearer codes and token, for comparison",
    )
    parser.add_argument(
        "--client-secret-auth",
        action="store_true",
        help="authenticate the client with its secret (HTTP Basic) instead of its key (private_key_jwt), "
        "for comparison; needs `manage.py bootstrap_demo --secret` first (the demo client is key-only)",
    )
    args = parser.parse_args(argv)
    err = err or sys.stderr
    try:
        responder = local_responder
        if args.llm:
            module, _, name = args.llm.partition(":")
            try:
                responder = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError, ValueError) as exc:
                raise AgentChatError(f"cannot load the responder {args.llm!r} ({exc})", EXIT_SETUP) from None
        run(
            args.idp,
            var_dir=args.var,
            interactive=args.interactive,
            out=out,
            question=args.question,
            responder=responder,
            client_secret_auth=args.client_secret_auth,
            dpop=not args.no_dpop,
        )
    except AgentChatError as exc:
        print(f"agent_chat: ✗ {exc}", file=err)
        if exc.admin_url:
            print(f"agent_chat: the chain so far: {exc.admin_url}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print("agent_chat: interrupted", file=err)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
