#!/usr/bin/env python3
"""The agent chat example: one multi-agent conversation, one auditable chain of codes.

Parity with the agent chat script of Boruta's code-chain PoC (PR 153), against
idp_project with chain_grant plugged in::

    user ──(wallet presentation)──► planner ──┬─► researcher  ──► merger ─┐
                                              ├─► security    ──► merger ─┤
                                              └─► implementer ──► merger ─┴─► critic
    critic ──(alice logs in and consents: +email)──► writer ──► POST /api/answers/

* The chain starts with a **wallet** presentation (``response_type=id_token``): a
  headless wallet (``chain_grant.wallet.HeadlessWallet``, its key kept in
  ``var/demo_wallet.json``) answers the IdP's ``openid://`` request.
* Every **agent** hand-off is ``grant_type=code_chain``: the receiving agent signs,
  with its own key from ``bootstrap_demo`` (``var/agents/<name>.json``), a proof with
  ``jti``, ``aud``, ``c_hash`` (bound to the previous code) and ``msg_sha256`` (the
  digest of the message it receives), through ``chain_grant.client``.
* Before the writer, a **person** (alice) logs in and consents to ``email``
  (``response_type=code`` with ``code=<critic's code>``).
* The writer's code is exchanged for an access token (scope ``email``) that
  publishes the answer to ``/api/answers/``; the IdP stores it with the actor chain.
* Then the script reads the chain back through the review API (as ``admin``, a
  staff session) and prints it as a tree, the integrity check and the admin URL.

Codes and tokens are never printed: only their first 6 characters and "…".

Headless (default) drives the same HTTP endpoints a browser does, with no back
door: cookies, the login form, the consent form, the wallet request page.
``--interactive`` opens your browser instead (``webbrowser``) and waits for the
redirect on http://127.0.0.1:8765/oauth-callback, as the PoC does.

The agents are deterministic and local (no LLM, no network). To plug in a real LLM,
pass ``--llm module:function`` (or ``run(..., responder=fn)``): ``fn(agent,
instructions, message) -> str`` is called for every agent's turn, with the agent's
name, its role (``ROLES``) and the message it received; see docs/demo.md.

Usage::

    .venv/bin/python scripts/agent_chat.py [--idp URL ...] [--var DIR] [--interactive]
                                           [--question TEXT] [--llm MODULE:FUNCTION]

``--idp`` may be repeated or comma-separated: requests go round-robin across the
URLs, and a URL that refuses the connection is dropped (the request is retried on
the next one). Exit status: 0 done; 1 the IdP refused a step or a check failed;
2 bad arguments or missing demo files (run ``make demo-data``); 3 no IdP reachable.

From Python (tests import this file with importlib)::

    result = run(["http://127.0.0.1:8000"], var_dir="var", on_step=print)
"""

import argparse
import hashlib
import html.parser
import http.server
import importlib
import json
import os
import secrets
import socket
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

try:
    import chain_grant  # noqa: F401
except ImportError:  # run as a file from a checkout: scripts/ is on sys.path, not the repository
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from urllib3.exceptions import NewConnectionError  # noqa: E402

from chain_grant.client import (  # noqa: E402
    ChainClientError,
    code_chain,
    exchange_code,
    load_private_key,
    message_digest,
    pkce_pair,
    sign_proof,
)

DEFAULT_IDP = "http://127.0.0.1:8000"
CALLBACK_HOST, CALLBACK_PORT, CALLBACK_PATH = "127.0.0.1", 8765, "/oauth-callback"
REDIRECT_URI = f"http://{CALLBACK_HOST}:{CALLBACK_PORT}{CALLBACK_PATH}"
ROOT_SCOPE = "openid profile read write"  # the demo client's root scopes: agents attenuate from these
CONSENT_SCOPE = "email"  # what alice adds for the writer (and what /api/answers/ requires)
ANSWERS_PATH = "/api/answers/"
DEFAULT_QUESTION = "How can AI agents act for our users without ever holding their passwords?"
TIMEOUT = 30
INTERACTIVE_TIMEOUT = 600  # how long --interactive waits for the browser to come back, seconds
BRANCHES = ("researcher", "security", "implementer")

EXIT_REFUSED, EXIT_SETUP, EXIT_UNREACHABLE = 1, 2, 3

# What each agent is for: the "system prompt" handed to a plugged-in LLM.
ROLES = {
    "planner": "You plan. Split the person's question into three tasks: research, security, implementation.",
    "researcher": "You research. Say what exists today that answers your task, with the standards involved.",
    "security": "You review security. List what can go wrong and the safeguard for each risk.",
    "implementer": "You implement. Give the concrete steps to build it.",
    "merger": "You merge. Combine the three contributions into one draft without losing a point.",
    "critic": "You criticise. Say what the draft misses before it goes to the person.",
    "writer": "You write the final answer for the person, taking the review into account.",
}

# Deterministic, local "agents": the same input gives the same transcript.
_LOCAL = {
    "researcher": "Delegation is a solved pattern: OAuth 2.0 authorization codes with PKCE, OpenID Connect "
    "id_tokens to prove who signs, RFC 8693 `act` claims to name the actors, and SIOPv2 wallets "
    "for people who hold their own keys.",
    "security": "Risks and safeguards: a stolen code (PKCE per hop, 10-minute codes); an agent exceeding its "
    "remit (scopes only narrow at each hop); a replayed hand-off (single-use jti, c_hash bound to "
    "the previous code); a forged agent (only registered keys count).",
    "implementer": "Steps: register each agent's public key with the IdP; pass one authorization code from "
    "agent to agent with grant_type=code_chain; ask the person before any new scope; exchange "
    "only the code of the agent that must act.",
    "critic": "Review: the draft covers standards, risks and steps. It must also say that the person stays in "
    "control (consent is the only way to add a scope) and that the whole conversation can be audited "
    "afterwards, step by step.",
}


def local_responder(agent: str, instructions: str, message: str) -> str:
    """The built-in agents: canned, deterministic text (no LLM, no network)."""
    if agent == "planner":
        first = message.strip().splitlines()[0] if message.strip() else "the question"
        return (
            f"Plan for “{first}”: the researcher finds what exists, the security reviewer finds what can "
            "go wrong, the implementer says how to build it; the merger joins them and the critic checks."
        )
    if agent == "merger":
        parts = [line.split(": ", 1)[1] for line in message.splitlines() if line.startswith("- ") and ": " in line]
        return "Draft: " + " ".join(parts) if parts else "Draft: " + message
    if agent == "writer":
        return (
            "Let each agent act through its own link of one authorization code chain. The person starts it "
            "(here with a wallet), every hand-off is signed by the receiving agent's registered key and bound "
            "to the previous code, scopes only narrow from agent to agent, and only the person adds one "
            "(here: email, by consent). No agent ever sees a password, and an auditor can read the whole "
            "conversation back as a tree of codes."
        )
    return _LOCAL[agent]


Responder = Callable[[str, str, str], str]


# --- results ------------------------------------------------------------------------------


class AgentChatError(Exception):
    """The run stopped: ``message`` says why, ``exit_code`` is the process status."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED, chain_id: str | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.chain_id = chain_id
        self.admin_url: str | None = None  # the chain so far, when there is one


@dataclass
class StepEvent:
    """One completed step of the chain (what ``on_step`` receives)."""

    index: int  # 0 = the wallet presentation (the root)
    kind: str  # wallet | agent | user
    actor: str  # the wallet's DID, the agent's identifier, or the person's username
    chain_id: str | None
    depth: int
    parent: int | None  # index of the parent step
    scope: str | None  # granted scope when the IdP says it (agent hops), else None
    code_digest_prefix: str  # first 8 hex of SHA-256(code): what the admin and the API show
    message_sha256: str | None = None  # agent steps: digest of the message received (signed as msg_sha256)


@dataclass
class ChatResult:
    chain_id: str
    steps: list[StepEvent]
    transcript: list[tuple[str, str, str]]  # (from, to, text)
    answer: dict[str, Any]
    tree: dict[str, Any]  # GET /api/chains/<id>/
    verification: dict[str, Any]  # GET /api/chains/<id>/verify/
    admin_url: str
    token_scope: str


@dataclass
class _Step:
    event: StepEvent
    code: str = field(repr=False)
    verifier: str = field(repr=False)


def mask(secret: str) -> str:
    """How a code or token is shown: its first 6 characters and an ellipsis."""
    return secret[:6] + "…"


def digest_prefix(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:8]


def short(text: str, width: int = 24) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --- transport: one IdP behind one or more addresses ----------------------------------------


def _refused(exc: BaseException) -> bool:
    """Did this fail before anything was sent (connection refused, no such host)?"""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        error = stack.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, (ConnectionRefusedError, NewConnectionError, socket.gaierror)):
            return True
        # requests → urllib3 MaxRetryError (args[0]) → .reason; urllib's URLError → .reason
        stack.extend([getattr(error, "reason", None), error.__cause__, error.__context__, *error.args])
    return False


class IdPPool:
    """Round-robin over the IdP's addresses; an address that refuses is dropped and the
    same request goes to the next one."""

    def __init__(self, urls: list[str]):
        self.all = [u.rstrip("/") for u in urls if u.strip()]
        if not self.all:
            raise AgentChatError("no IdP URL given", EXIT_SETUP)
        self.alive = list(self.all)
        self._next = 0
        self.origins = {_origin(u) for u in self.all}

    @property
    def primary(self) -> str:
        return (self.alive or self.all)[0]

    def call(self, fn: Callable[[str], Any]) -> Any:
        while self.alive:
            index = self._next % len(self.alive)
            self._next = index + 1
            try:
                return fn(self.alive[index])
            except Exception as exc:  # noqa: BLE001 (filtered just below)
                if not _refused(exc):
                    raise
                del self.alive[index]  # nothing was sent: the same request goes to the next address
                self._next = index
        raise AgentChatError(
            f"cannot reach the IdP at {', '.join(self.all)} (connection refused). Is it running? "
            "Start it with `make run`, or run the whole demo with `make demo`.",
            EXIT_UNREACHABLE,
        )

    def is_idp(self, url: str) -> bool:
        return _origin(url) in self.origins

    def request(
        self, session: requests.Session, method: str, url: str, *, form_origin: bool = False, **kwargs
    ) -> tuple[requests.Response, str]:
        """Send to the next address. ``url`` is a path or an absolute IdP URL (rebased)."""
        parts = urllib.parse.urlsplit(url)
        tail = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        extra_headers = kwargs.pop("headers", None) or {}

        def send(base: str) -> tuple[requests.Response, str]:
            headers = dict(extra_headers)
            if form_origin:  # a browser's form POST: Origin and Referer of the page (Django's CSRF check)
                headers.update(Origin=base, Referer=base + tail)
            response = session.request(
                method, base + tail, headers=headers, allow_redirects=False, timeout=TIMEOUT, **kwargs
            )
            return response, base + tail

        return self.call(send)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


# --- HTML pages (stdlib parser) ------------------------------------------------------------------


class Page(html.parser.HTMLParser):
    """The forms, the wallet request link and any error heading of an IdP page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.wallet_link: str | None = None
        self.headings: list[str] = []
        self._heading: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append(
                {
                    "id": a.get("id"),
                    "action": a.get("action") or "",
                    "method": (a.get("method") or "get").lower(),
                    "inputs": [],
                }
            )
        elif tag in ("input", "textarea", "select") and self.forms and a.get("name"):
            self.forms[-1]["inputs"].append(
                {"name": a["name"], "value": a.get("value") or "", "type": (a.get("type") or "text").lower()}
            )
        elif tag == "a" and a.get("id") == "wallet-request":
            self.wallet_link = a.get("href")
        elif tag in ("h1", "h2", "h3", "p") and self._heading is None:
            self._heading = []

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "p") and self._heading is not None:
            text = " ".join("".join(self._heading).split())
            if text:
                self.headings.append(text)
            self._heading = None

    def form(self, *, form_id: str | None = None, with_input: str | None = None) -> dict[str, Any] | None:
        for f in self.forms:
            if (form_id and f["id"] == form_id) or (with_input and any(i["name"] == with_input for i in f["inputs"])):
                return f
        return None

    def error_text(self) -> str:
        wanted = [h for h in self.headings if "error" in h.lower()]
        return "; ".join(wanted or self.headings[:2]) or "an unexpected page"


def form_data(form: dict[str, Any], *, submit: str | None = None, **values: str) -> dict[str, str]:
    """The inputs a browser would post: every named field, only the clicked submit button."""
    data = {}
    for field_ in form["inputs"]:
        if field_["type"] == "submit":
            if field_["name"] == submit:
                data[field_["name"]] = field_["value"]
            continue
        if field_["type"] in ("checkbox", "radio"):
            continue  # unticked by default (the IdP's forms have none)
        data[field_["name"]] = field_["value"]
    data.update(values)
    return data


# --- the browser steps -----------------------------------------------------------------------------


@dataclass
class Callback:
    code: str = field(repr=False)
    state: str


class HeadlessBrowser:
    """A browser without a screen: a cookie jar, the login form, the consent form and a
    headless wallet; it stops at the client's redirect_uri and reads code and state."""

    def __init__(self, pool: IdPPool, *, login: tuple[str, str] | None = None, wallet: Any = None):
        self.pool = pool
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "agent_chat (headless browser)"
        self.login = login
        self.wallet = wallet

    def _share_cookies(self) -> None:
        """One IdP, several addresses: keep cookies host-less so every address gets them."""
        jar = self.session.cookies
        for cookie in list(jar):
            if cookie.domain:
                jar.clear(cookie.domain, cookie.path, cookie.name)
                jar.set(cookie.name, cookie.value, path=cookie.path)

    def _send(self, method: str, url: str, **kwargs) -> tuple[requests.Response, str]:
        response, sent_to = self.pool.request(self.session, method, url, **kwargs)
        self._share_cookies()
        return response, sent_to

    def authorize(self, path: str, params: dict[str, str], what: str) -> Callback:
        url = path + "?" + urllib.parse.urlencode(params)
        method, data, logged_in, consented = "GET", None, False, False
        for _ in range(20):
            if url.split("?", 1)[0] == REDIRECT_URI:  # e.g. a wallet answer that points straight at the client
                return _callback(url, params["state"], what)
            response, here = self._send(method, url, data=data, form_origin=method == "POST")
            method, data = "GET", None
            if response.is_redirect:
                target = urllib.parse.urljoin(here, response.headers["Location"])
                if target.split("?", 1)[0] == REDIRECT_URI:
                    return _callback(target, params["state"], what)
                if not self.pool.is_idp(target):
                    raise AgentChatError(f"{what}: the IdP redirected outside itself ({_origin(target)})")
                url = target
                continue
            if response.status_code != 200:
                raise AgentChatError(
                    f"{what}: the IdP answered HTTP {response.status_code} ({Page(response.text).error_text()})"
                )
            page = Page(response.text)
            if page.wallet_link:
                if self.wallet is None:
                    raise AgentChatError(f"{what}: the IdP asks for a wallet and this browser has none")
                url = self._present(response.text, what)
                continue
            login_form = page.form(with_input="password")
            if login_form is not None:
                if self.login is None or logged_in:
                    raise AgentChatError(
                        f"{what}: logging in failed (is the password in demo_credentials.json "
                        "still the one in the database? run `make demo-data`)"
                    )
                username, password = self.login
                url = urllib.parse.urljoin(here, login_form["action"]) if login_form["action"] else here
                method, data, logged_in = "POST", form_data(login_form, username=username, password=password), True
                continue
            consent = page.form(form_id="authorizationForm")
            if consent is not None and not consented:
                url = urllib.parse.urljoin(here, consent["action"]) if consent["action"] else here
                method, data, consented = "POST", form_data(consent, submit="allow"), True
                continue
            raise AgentChatError(f"{what}: the IdP showed {page.error_text()!r}")
        raise AgentChatError(f"{what}: too many redirects")

    def _present(self, html_text: str, what: str) -> str:
        """The headless wallet answers the request page; returns where the browser goes next."""
        from chain_grant.client.wallet import request_url_from_html

        try:
            return self.wallet.respond(request_url_from_html(html_text), post=self._wallet_post)
        except Exception as exc:  # noqa: BLE001 (any wallet failure ends the step with its reason)
            if _refused(exc):
                raise AgentChatError(
                    f"{what}: the wallet cannot reach the IdP's response_uri (connection refused)", EXIT_UNREACHABLE
                ) from None
            raise AgentChatError(f"{what}: the wallet presentation was refused ({exc})") from None

    def _wallet_post(self, url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The wallet's direct_post to the IdP's response_uri (through the IdP's addresses)."""
        headers = {"Accept": "application/json"}
        if self.pool.is_idp(url):
            response, _ = self.pool.request(requests.Session(), "POST", url, data=data, headers=headers)
        else:
            response = requests.post(url, data=data, headers=headers, timeout=TIMEOUT, allow_redirects=False)
        try:
            body = response.json()
        except ValueError:
            body = {"error": "server_error", "error_description": f"HTTP {response.status_code}"}
        return response.status_code, body if isinstance(body, dict) else {"error": "server_error"}


def _callback(url: str, state: str, what: str) -> Callback:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if query.get("state", [None])[0] != state:
        raise AgentChatError(f"{what}: the redirect's state does not match the request (possible CSRF)")
    if "error" in query:
        description = query.get("error_description", [""])[0]
        raise AgentChatError(
            f"{what}: {query['error'][0]}" + (f": {description}" if description else "") + _hint(description)
        )
    if not query.get("code"):
        raise AgentChatError(f"{what}: the redirect carries no code")
    return Callback(code=query["code"][0], state=state)


class InteractiveBrowser:
    """Your browser: open the authorize URL, wait for the redirect on 127.0.0.1:8765."""

    def __init__(self, pool: IdPPool, out: TextIO, timeout: float | None = None):
        self.pool, self.out, self.timeout = pool, out, timeout or INTERACTIVE_TIMEOUT

    def authorize(self, path: str, params: dict[str, str], what: str) -> Callback:
        received: dict[str, str] = {}
        done = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                if parts.path != CALLBACK_PATH or query.get("state") != params["state"]:
                    self.send_error(404)
                    return
                received.update(query)
                body = b"<!doctype html><title>agent_chat</title><p>Done: you can close this tab.</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                done.set()

            def log_message(self, *args):  # the query string holds the code: never logged
                pass

        try:
            server = http.server.HTTPServer((CALLBACK_HOST, CALLBACK_PORT), Handler)
        except OSError as exc:
            raise AgentChatError(
                f"cannot listen on {CALLBACK_HOST}:{CALLBACK_PORT} for the callback ({exc})", EXIT_SETUP
            ) from None
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = self.pool.primary + path + "?" + urllib.parse.urlencode(params)
            print(
                f"Opening {self.pool.primary}{path}?…&response_type={params['response_type']}"
                f"&scope={urllib.parse.quote(params['scope'])}",
                file=self.out,
            )
            print(
                f"Complete the {what} in your browser. Waiting for the redirect to {REDIRECT_URI} …",
                file=self.out,
                flush=True,
            )
            webbrowser.open(url)
            if not done.wait(self.timeout):
                raise AgentChatError(f"{what}: no redirect within {int(self.timeout)} s")
        finally:
            server.shutdown()
            server.server_close()
        query = urllib.parse.urlencode(received)
        return _callback(f"{REDIRECT_URI}?{query}", params["state"], what)


# --- the run --------------------------------------------------------------------------------------


class Chat:
    def __init__(
        self,
        urls: list[str],
        var_dir: Path,
        *,
        interactive: bool,
        on_step,
        out: TextIO,
        question: str,
        responder: Responder,
    ):
        self.pool = IdPPool(urls)
        self.var = Path(var_dir)
        self.out = out
        self.on_step = on_step
        self.question = question
        self.responder = responder
        self.interactive = interactive
        self.steps: list[_Step] = []
        self.transcript: list[tuple[str, str, str]] = []
        self.chain_id: str | None = None
        self._pending: list[StepEvent] = []  # the root's event waits for the chain id
        self.creds = self._credentials()
        self.keys = {name: self._agent_key(name) for name in ROLES}

    # -- setup --

    def _credentials(self) -> dict[str, str]:
        path = self.var / "demo_credentials.json"
        try:
            creds = json.loads(path.read_text())
        except (OSError, ValueError):
            raise AgentChatError(
                f"no demo credentials at {path}: run `make demo-data` (manage.py bootstrap_demo) first, or pass --var",
                EXIT_SETUP,
            ) from None
        missing = {"client_id", "client_secret", "alice_password", "admin_password"} - set(creds)
        if missing:
            raise AgentChatError(f"{path} lacks {', '.join(sorted(missing))}: run `make demo-data`", EXIT_SETUP)
        return creds

    def _agent_key(self, name: str):
        path = self.var / "agents" / f"{name}.json"
        try:
            return load_private_key(str(path))
        except (OSError, ValueError):
            raise AgentChatError(
                f"no private key for agent {name} at {path}: run `make demo-data`", EXIT_SETUP
            ) from None

    def _wallet(self):
        from chain_grant.client.wallet import HeadlessWallet

        path = self.var / "demo_wallet.json"
        if path.exists():
            return HeadlessWallet.load(path)
        wallet = HeadlessWallet.generate()
        wallet.save(path)
        return wallet

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def say_message(self, sender: str, receiver: str, text: str, shown: str | None = None) -> None:
        """A message of the conversation: kept exactly in the transcript, printed (maybe abridged)."""
        self.transcript.append((sender, receiver, text))
        head = f"  {sender} → {receiver}: "
        self.say(textwrap.fill(shown or text, width=100, initial_indent=head, subsequent_indent=" " * 4))

    def respond(self, agent: str, message: str) -> str:
        text = self.responder(agent, ROLES[agent], message)
        if not isinstance(text, str) or not text.strip():
            raise AgentChatError(f"the responder gave {agent} no text")
        return text.strip()

    # -- steps --

    def _record(
        self,
        kind: str,
        actor: str,
        code: str,
        verifier: str,
        parent: _Step | None,
        scope: str | None = None,
        depth: int | None = None,
        message_sha256: str | None = None,
    ) -> _Step:
        event = StepEvent(
            index=len(self.steps),
            kind=kind,
            actor=actor,
            chain_id=self.chain_id,
            depth=depth if depth is not None else (parent.event.depth + 1 if parent else 0),
            parent=parent.event.index if parent else None,
            scope=scope,
            code_digest_prefix=digest_prefix(code),
            message_sha256=message_sha256,
        )
        step = _Step(event, code, verifier)
        self.steps.append(step)
        if self.chain_id is None:
            self._pending.append(event)
        else:
            self._emit(event)
        return step

    def _emit(self, event: StepEvent) -> None:
        if self.on_step is not None:
            self.on_step(event)

    def _learn_chain_id(self, chain_id: str) -> None:
        if self.chain_id is None:
            self.chain_id = chain_id
            for event in self._pending:
                event.chain_id = chain_id
                self._emit(event)
            self._pending.clear()
        elif chain_id != self.chain_id:
            raise AgentChatError(f"the IdP put a hand-off in another chain ({chain_id})", chain_id=self.chain_id)

    def hop(
        self,
        parent: _Step,
        sender: str,
        agent: str,
        message: str,
        *,
        shown: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> _Step:
        """``agent`` receives ``message`` with ``parent``'s code: code_chain → its own code."""
        verifier, challenge = pkce_pair()
        proof = sign_proof(self.keys[agent], sub=agent, aud=self.issuer, code=parent.code, message=message, extra=extra)
        try:
            body = self.pool.call(
                lambda base: code_chain(
                    base + self.token_path,
                    self.creds["client_id"],
                    self.creds["client_secret"],
                    parent.code,
                    proof,
                    code_challenge=challenge,
                )
            )
        except ChainClientError as exc:
            raise AgentChatError(
                f"the IdP refused the hand-off {parent.event.actor} → {agent} (step {len(self.steps)}): "
                f"{exc.error}: {exc.description}{_hint(exc.description)}",
                chain_id=self.chain_id,
            ) from None
        self._learn_chain_id(body["chain_id"])
        step = self._record(
            "agent",
            agent,
            body["authorization_code"],
            verifier,
            parent,
            body.get("scope"),
            body.get("depth"),
            message_sha256=message_digest(message),
        )
        self.say(
            f"[code_chain -> {agent}]  {mask(parent.code)} → {mask(step.code)}  depth {step.event.depth}, "
            f"scope “{step.event.scope}”"
        )
        self.say_message(sender, agent, message, shown)
        return step

    def wallet_step(self) -> _Step:
        self.say("[browser -> wallet presentation]")
        wallet = None if self.interactive else self._wallet()
        verifier, challenge = pkce_pair()
        params = {
            "client_id": self.creds["client_id"],
            "redirect_uri": REDIRECT_URI,
            "response_type": "id_token",
            "scope": ROOT_SCOPE,
            "state": secrets.token_urlsafe(16),
            "client_metadata": "{}",
            "prompt": "login",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if wallet is not None:
            self.say(
                f"  GET {self.authorize_path} response_type=id_token scope=“{ROOT_SCOPE}” (PKCE S256); "
                f"headless wallet {short(wallet.did, 28)} answers the openid:// request"
            )
            browser = HeadlessBrowser(self.pool, wallet=wallet)
        else:
            browser = InteractiveBrowser(self.pool, self.out)
        callback = browser.authorize(self.authorize_path, params, "the wallet presentation")
        actor = wallet.did if wallet is not None else "wallet"
        step = self._record("wallet", actor, callback.code, verifier, None, depth=0)
        self.say(f"[id_token presentation -> planner]  {mask(step.code)}  (the chain's root)")
        return step

    def consent_step(self, parent: _Step) -> _Step:
        self.say("[browser -> chained authorization code request]")
        username = "alice"
        verifier, challenge = pkce_pair()
        params = {
            "client_id": self.creds["client_id"],
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "prompt": "login",
            "scope": CONSENT_SCOPE,
            "state": secrets.token_urlsafe(16),
            "code": parent.code,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if self.interactive:
            self.say(f"  log in as {username} (password in {self.var / 'demo_credentials.json'}) and consent")
            browser = InteractiveBrowser(self.pool, self.out)
        else:
            self.say(
                f"  GET {self.authorize_path} response_type=code scope=“{CONSENT_SCOPE}” code={mask(parent.code)}"
                f" prompt=login; {username} logs in and consents"
            )
            browser = HeadlessBrowser(self.pool, login=(username, self.creds["alice_password"]))
        callback = browser.authorize(self.authorize_path, params, f"{username}'s consent")
        step = self._record("user", username, callback.code, verifier, parent)
        self.say(
            f"[authorization code request -> writer]  {mask(parent.code)} → {mask(step.code)}  "
            f"depth {step.event.depth}, {username} consented to “{CONSENT_SCOPE}”"
        )
        return step

    # -- the conversation --

    def discover(self) -> None:
        def get(base):
            response = requests.get(base + "/oauth/.well-known/openid-configuration", timeout=TIMEOUT)
            response.raise_for_status()
            return response.json()

        try:
            meta = self.pool.call(get)
        except (requests.RequestException, ValueError) as exc:
            raise AgentChatError(f"the IdP's OpenID discovery failed ({exc})", EXIT_UNREACHABLE) from None
        if "code_chain" not in meta.get("grant_types_supported", []):
            raise AgentChatError("the IdP does not advertise grant_type=code_chain (is chain_grant installed?)")
        self.issuer = meta["issuer"]
        self.pool.origins.add(_origin(self.issuer))  # absolute URLs the IdP builds from its issuer
        self.token_path = urllib.parse.urlsplit(meta["token_endpoint"]).path
        self.authorize_path = urllib.parse.urlsplit(meta["authorization_endpoint"]).path
        self.say(f"==> IdP {', '.join(self.pool.all)}  issuer {self.issuer}  client {self.creds['client_id']}")

    def converse(self) -> tuple[_Step, str]:
        """The conversation. Each hand-off is one step; every message an agent receives is
        signed by that agent (msg_sha256), so the chain is also the conversation's audit log."""
        q = self.question
        root = self.wallet_step()
        planner = self.hop(root, "user", "planner", q)
        plan = self.respond("planner", q)

        outputs: dict[str, tuple[_Step, str]] = {}
        for agent in BRANCHES:  # the fan-out: three children of the planner's code
            task = f"{plan}\nYour task ({agent}): {ROLES[agent]}"
            step = self.hop(
                planner,
                "planner",
                agent,
                task,
                shown=f"{plan} [your task: {agent}]" if agent == BRANCHES[0] else f"… [your task: {agent}]",
            )
            outputs[agent] = (step, self.respond(agent, task))

        merged_steps = []
        for agent in BRANCHES:  # one hand-off per branch, each from that branch's code
            branch_step, text = outputs[agent]
            merged_steps.append(self.hop(branch_step, agent, "merger", f"- {agent}: {text}"))
        contributions = "\n".join(f"- {agent}: {outputs[agent][1]}" for agent in BRANCHES)
        draft = self.respond("merger", contributions)

        # The critic continues from the merger's last code (it has read all three branches by
        # then); its proof also names the three merger steps (digest prefixes, as the admin shows).
        critic = self.hop(
            merged_steps[-1],
            "merger",
            "critic",
            draft,
            extra={"merged_steps": [s.event.code_digest_prefix for s in merged_steps]},
        )
        review = self.respond("critic", draft)

        consent = self.consent_step(critic)
        brief = f"{draft}\n{review}"
        writer = self.hop(consent, "critic", "writer", brief, shown=f"[the draft] + {review}")
        answer = self.respond("writer", brief)
        self.say_message("writer", "user", answer)
        return writer, answer

    def publish(self, writer: _Step, answer: str) -> tuple[dict[str, Any], str]:
        try:
            token = self.pool.call(
                lambda base: exchange_code(
                    base + self.token_path,
                    self.creds["client_id"],
                    self.creds["client_secret"],
                    writer.code,
                    redirect_uri=REDIRECT_URI,
                    code_verifier=writer.verifier,
                )
            )
        except ChainClientError as exc:
            raise AgentChatError(
                f"exchanging the writer's code failed: {exc.error}: {exc.description}{_hint(exc.description)}",
                chain_id=self.chain_id,
            ) from None
        access = token["access_token"]
        self.say(
            f"[exchange -> writer's token]  code {mask(writer.code)} → access token {mask(access)}  "
            f"scope “{token.get('scope')}”"
        )
        session = requests.Session()
        response, _ = self.pool.request(
            session, "POST", ANSWERS_PATH, json={"text": answer}, headers={"Authorization": f"Bearer {access}"}
        )
        if response.status_code != 201:
            raise AgentChatError(
                f"publishing the answer failed: HTTP {response.status_code} {_error_of(response)}",
                chain_id=self.chain_id,
            )
        stored = response.json()
        actors = " ← ".join(
            a["actor"] if a["kind"] != "wallet" else short(a["actor"], 20) for a in reversed(stored["actors"])
        )
        self.say(f"[writer -> POST {ANSWERS_PATH}]  answer #{stored['id']} stored with its actor chain: {actors}")
        return stored, token.get("scope", "")

    def review(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read the chain back through the review API as the admin (a staff session)."""
        browser = HeadlessBrowser(self.pool)
        response, here = browser._send("GET", "/accounts/login/")
        login_form = Page(response.text).form(with_input="password") if response.status_code == 200 else None
        if login_form is None:
            raise AgentChatError(f"the admin login page did not load (HTTP {response.status_code})")
        data = form_data(login_form, username="admin", password=self.creds["admin_password"])
        response, _ = browser._send(
            "POST", urllib.parse.urljoin(here, login_form["action"] or here), data=data, form_origin=True
        )
        if response.status_code != 302:
            raise AgentChatError("logging in as admin failed (run `make demo-data` to reset the password)")
        results = []
        for suffix in ("", "verify/"):
            response, _ = browser._send(
                "GET", f"/api/chains/{self.chain_id}/{suffix}", headers={"Accept": "application/json"}
            )
            if response.status_code != 200:
                raise AgentChatError(
                    f"the review API answered HTTP {response.status_code} {_error_of(response)}", chain_id=self.chain_id
                )
            results.append(response.json())
        return results[0], results[1]

    def print_tree(self, tree: dict[str, Any]) -> None:
        steps = tree["steps"]
        by_id = {s["id"]: s for s in steps}
        self.say(f"Chain {tree['chain_id']}  ({len(steps)} steps, depth {max(s['depth'] for s in steps)})")
        for line in tree_lines(steps, by_id):
            self.say("  " + line)

    def admin_url(self) -> str:
        return f"{self.pool.primary}/admin/chain_grant/chain/{self.chain_id}/tree/"


def tree_lines(steps: list[dict[str, Any]], by_id: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The chain as an indented tree: ``kind actor  scope (+added −narrowed)`` per step."""
    by_id = by_id or {s["id"]: s for s in steps}
    roots = [s for s in steps if not s["parent"]]
    lines: list[str] = []

    def label(s):
        actor = short(s["actor"], 28) if s["kind"] == "wallet" else s["actor"]
        diff = [f"+{x}" for x in s.get("scope_added", [])] + [f"−{x}" for x in s.get("scope_narrowed", [])]
        state = f"  [{s['state']}]" if s.get("state") not in (None, "live") else ""
        return f"{s['kind']} {actor}  “{s['scope']}”" + (f"  ({' '.join(diff)})" if diff else "") + state

    def walk(s, prefix, last, top):
        lines.append((prefix + ("" if top else ("└─ " if last else "├─ "))) + label(s))
        kids = [by_id[c] for c in s.get("children", []) if c in by_id]
        for i, kid in enumerate(kids):
            walk(kid, prefix + ("" if top else ("   " if last else "│  ")), i == len(kids) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return lines


def _hint(description: str) -> str:
    text = description.lower()
    if "revoked" in text:
        return " — the chain (or this branch) was revoked, e.g. in the admin; start a new run"
    if "not an active agent" in text or "not one of the agent's active keys" in text:
        return " — the agent is disabled or its key was rotated (`manage.py chain_grant_agent list`)"
    if "expired" in text:
        return " — codes live 10 minutes (CODE_EXPIRE_SECONDS)"
    return ""


def _error_of(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return f"{body.get('error', '')}: {body.get('error_description', '')}".strip(": ")


def run(
    idp_urls: list[str] | str,
    *,
    var_dir: str | os.PathLike | None = None,
    interactive: bool = False,
    on_step: Callable[[StepEvent], None] | None = None,
    out: TextIO | None = None,
    question: str = DEFAULT_QUESTION,
    responder: Responder | None = None,
) -> ChatResult:
    """One conversation, one chain. Raises :class:`AgentChatError` when a step fails."""
    out = out or sys.stdout
    urls = split_urls([idp_urls] if isinstance(idp_urls, str) else list(idp_urls))
    chat = Chat(
        urls,
        Path(var_dir or default_var_dir()),
        interactive=interactive,
        on_step=on_step,
        out=out,
        question=question,
        responder=responder or local_responder,
    )
    started = time.monotonic()
    try:
        chat.discover()
        writer, answer = chat.converse()
        stored, token_scope = chat.publish(writer, answer)
        tree, verification = chat.review()
    except AgentChatError as exc:
        exc.chain_id = exc.chain_id or chat.chain_id
        if exc.chain_id:
            exc.admin_url = f"{chat.pool.primary}/admin/chain_grant/chain/{exc.chain_id}/tree/"
        raise
    chat.say()
    chat.print_tree(tree)
    checked = verification["checked"]
    if verification["ok"]:
        chat.say(f"Integrity: ✓ verified ({checked} steps: every link_hash matches)")
    else:
        chat.say(f"Integrity: ✗ first bad step {verification['first_bad_step']}")
    chat.say(f"Admin: {chat.admin_url()}  (log in as admin)")
    chat.say(f"Done in {time.monotonic() - started:.1f} s: {len(chat.steps)} steps, answer #{stored['id']}.")
    if not verification["ok"]:
        raise AgentChatError(
            f"the chain does not verify: first bad step {verification['first_bad_step']}", chain_id=chat.chain_id
        )
    return ChatResult(
        chain_id=chat.chain_id,
        steps=[s.event for s in chat.steps],
        transcript=chat.transcript,
        answer=stored,
        tree=tree,
        verification=verification,
        admin_url=chat.admin_url(),
        token_scope=token_scope,
    )


def split_urls(values: list[str]) -> list[str]:
    return [u.strip() for v in values for u in v.split(",") if u.strip()]


def default_var_dir() -> str:
    return os.environ.get("IDP_VAR_DIR") or "var"


def load_responder(spec: str) -> Responder:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AgentChatError(f"--llm wants MODULE:FUNCTION, not {spec!r}", EXIT_SETUP)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AgentChatError(f"cannot load the responder {spec!r} ({exc})", EXIT_SETUP) from None


def main(argv: list[str] | None = None, *, on_step=None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = argparse.ArgumentParser(
        description="The agent chat example: wallet → agents → consent → writer, "
        "one auditable authorization code chain."
    )
    parser.add_argument(
        "--idp",
        action="append",
        metavar="URL",
        help=f"the IdP (repeatable or comma-separated; round-robin). Default {DEFAULT_IDP}",
    )
    parser.add_argument(
        "--var",
        metavar="DIR",
        default=None,
        help="bootstrap_demo's var dir (demo_credentials.json, agents/). Default $IDP_VAR_DIR or var",
    )
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="open your browser for the wallet and consent steps (callback on 127.0.0.1:8765)",
    )
    parser.add_argument("--once", action="store_true", help="exit after the run (always so; for `make demo`)")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="what the person asks the planner")
    parser.add_argument(
        "--llm",
        metavar="MODULE:FUNCTION",
        default=os.environ.get("AGENT_CHAT_LLM"),
        help="plug in a real LLM: FUNCTION(agent, instructions, message) -> str",
    )
    args = parser.parse_args(argv)
    try:
        responder = load_responder(args.llm) if args.llm else None
        run(
            split_urls(args.idp or [DEFAULT_IDP]),
            var_dir=args.var or default_var_dir(),
            interactive=args.interactive,
            on_step=on_step,
            out=out,
            question=args.question,
            responder=responder,
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
