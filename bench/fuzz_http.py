"""A bounded HTTP fuzz of the IdP under gunicorn: N randomized requests (default 20,000,
at most --max-seconds) across every endpoint an attacker reaches; prints the responses
by status class and exits non-zero if any was ≥ 500 (or got no answer).

    .venv/bin/python bench/fuzz_http.py [--requests 20000] [--max-seconds 600] [--workers 4]
        [--port 18801] [--clients 8] [--seed 1] [--database-url postgres://postgres@127.0.0.1:5432/postgres]

Setup (untimed): a throw-away PostgreSQL database ``h500fuzz`` on the server
--database-url names (dropped at the end), ``migrate`` and ``bootstrap_demo``, then a
client with an unhashed secret (a PBKDF2 check costs ≈ 290 ms here: the demo client,
which has one, gets 1 % of the token requests), a public device-flow client, a staff
auditor with tokens (chains:read chains:revoke; introspection), alice's browser
session and 500 DOT codes (PKCE) to hop from. gunicorn runs deploy/gunicorn.conf.py
(idp_project.wsgi, so guard_wsgi and every middleware) with --workers on 127.0.0.1:--port.

The requests, from --clients threads over raw sockets (one connection each, so any
bytes can be sent): the token endpoint (every grant type; code_chain from a real code
and a validly signed proof with up to three changes, or random), authorize (random or
a valid request changed, logged in or not; the wallet step's request page, whose state
then feeds direct_post), the wallet's direct_post (self-issued id_tokens random or
valid), its status/complete/cancel, introspection, revocation, device authorization,
the review API (staff token, random or none), the CSRF-protected login pages, and the
other public pages; a fifth of them with a random Content-Type (charsets Django cannot
decode with included) and Authorization header.

Also counted, not fatal: OAuth/API responses ≥ 400 whose body is not JSON with ``error``.
Codes, secrets and tokens are never printed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PYTHON = sys.executable
BIN = Path(sys.executable).parent
DB_NAME = "h500fuzz"

from jwcrypto import jwk, jws  # noqa: E402

from chain_grant.client import load_private_key, sign_proof  # noqa: E402
from chain_grant.client.jose import JWK_THUMBPRINT_URI, code_hash  # noqa: E402

REDIRECT_URI = "http://127.0.0.1:8765/oauth-callback"
FORM = "application/x-www-form-urlencoded"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"

SETUP = r"""
import json, secrets, sys, base64, hashlib
from datetime import timedelta
import django
django.setup()
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model, get_grant_model, set_token_value
from chain_grant.models import Agent, ChainClient

Application, AccessToken, Grant = get_application_model(), get_access_token_model(), get_grant_model()
User = get_user_model()
demo = Application.objects.get(client_id="chain-demo")
secret = secrets.token_urlsafe(24)
plain = Application.objects.create(
    name="fuzz, unhashed secret", client_id="fuzz-plain", client_secret=secret, hash_client_secret=False,
    client_type=demo.client_type, authorization_grant_type=demo.authorization_grant_type,
    redirect_uris=demo.redirect_uris, algorithm=demo.algorithm, user=demo.user)
ChainClient.objects.create(application=plain)
for agent in Agent.objects.all():
    agent.applications.add(plain)
Application.objects.create(
    name="fuzz tv", client_id="fuzz-tv", client_secret="", client_type="public",
    authorization_grant_type="urn:ietf:params:oauth:grant-type:device_code", redirect_uris="", user=demo.user)
auditor = User.objects.create_user("fuzz-auditor", "fuzz@example.com", secrets.token_urlsafe(12), is_staff=True)
auditor.user_permissions.add(Permission.objects.get(codename="revoke_chainedgrant"))
tokens = {}
for name, scope in (("staff", "chains:read chains:revoke"), ("introspection", "introspection")):
    raw = secrets.token_urlsafe(30)
    token = AccessToken(user=auditor, application=plain, scope=scope, expires=timezone.now() + timedelta(hours=2))
    set_token_value(token, raw)
    token.save()
    tokens[name] = raw
alice = User.objects.get(username="alice")
session = SessionStore()
session[SESSION_KEY], session[BACKEND_SESSION_KEY] = str(alice.pk), "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = alice.get_session_auth_hash()
session.create()
verifier = secrets.token_urlsafe(48)
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
codes = [secrets.token_urlsafe(24) for _ in range(int(sys.argv[1]))]
Grant.objects.bulk_create(
    Grant(user=alice, application=plain, code=code, expires=timezone.now() + timedelta(hours=2),
          redirect_uri=REDIRECT_URI, scope="openid read write", code_challenge=challenge, code_challenge_method="S256")
    for code in codes)
print(json.dumps({"secret": secret, "tokens": tokens, "session": session.session_key, "codes": codes,
                  "verifier": verifier}))
""".replace("REDIRECT_URI", repr(REDIRECT_URI))


# --- random values -------------------------------------------------------------------------

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~",
    " %&=+;:/?#[]@!$'()*,\"<>\\^`{|}",
    "\x00\x01\x1f\x7f\t\r\n",
    "éüßñ€☃𝄞\u200b\ufeff\u202e",
    "\ud800\udfff",
]
ODD = [
    "",
    "\x00",
    "a\x00b",
    "é" * 40,
    "\ud800",
    "c" * 300,
    "1e5",
    "NaN",
    "null",
    "[]",
    "{}",
    "%00",
    "-1",
    "99999999999999999999999",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
]
CONTENT_TYPES = [
    FORM + "; charset=utf-8",
    FORM + "; charset=latin-1",
    FORM + "; charset=x-unknown",
    FORM + "; charset=rot13",
    FORM + "; charset=undefined",
    FORM + "; charset=utf-16",
    "multipart/form-data; boundary=xx",
    "multipart/form-data; boundary=xx; charset=hex",
    "multipart/form-data",
    "application/json",
    "application/json; charset=zip",
    "text/plain; charset=undefined",
    "text/plain; charset=rot13",
    "text/plain; a*=x-unknown''b",
    "multipart/form-data; boundary*=undefined''x",
    "",
    "é/ü",
]


class Gen:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def text(self, n: int = 24) -> str:
        rng = self.rng
        weights = [8, 2, 1, 2, 1]
        return "".join(rng.choice(rng.choices(ALPHABETS, weights)[0]) for _ in range(rng.randint(0, n)))

    def value(self, *plausible: str) -> str:
        roll = self.rng.random()
        if plausible and roll < 0.55:
            return self.rng.choice(plausible)
        return self.rng.choice(ODD) if roll < 0.7 else self.text()

    def json_value(self, depth: int = 0):
        rng = self.rng
        kind = rng.randint(0, 7 if depth < 3 else 4)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice([True, False])
        if kind == 2:
            return rng.choice([0, -1, 2**31, 2**64, 10**30, int(time.time())])
        if kind == 3:
            return rng.choice([0.5, float("nan"), float("inf"), -1e308])
        if kind == 4:
            return self.value()
        if kind == 5:
            return [self.json_value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {self.text(8): self.json_value(depth + 1) for _ in range(rng.randint(0, 3))}

    def dumps(self, value) -> str:
        return json.dumps(value, allow_nan=True)

    def jws(self, key=None, claims: dict | None = None, alg: str = "RS512") -> str:
        rng = self.rng
        header = {}
        for name in rng.sample(["alg", "kid", "typ", "crit", "b64", "jwk"], rng.randint(0, 4)):
            header[name] = self.json_value() if rng.random() < 0.5 else {"alg": alg, "typ": "JWT"}.get(name, "x")
        claims = dict(claims or {})
        for name in rng.sample(["sub", "iss", "aud", "iat", "exp", "jti", "c_hash", "nonce", "sub_jwk", "x"], 2):
            if rng.random() < 0.5:
                claims[name] = self.json_value()
        payload = self.dumps(claims)
        if key is not None and rng.random() < 0.5:
            header.update(alg=alg, kid=key.get("kid") or key.thumbprint())
            token = jws.JWS(payload.encode("utf-8", "surrogatepass"))
            with contextlib.suppress(Exception):  # a header jwcrypto will not sign: sent unsigned
                token.add_signature(key, alg=alg, protected=self.dumps(header))
                return token.serialize(compact=True)
        sig = rng.choice(["", "AAAA", b64(os.urandom(rng.choice([64, 256])))])
        return f"{b64(self.dumps(header))}.{b64(payload)}.{sig}"

    def mutate(self, pairs: list[tuple[str, str]], names: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
        rng, pairs = self.rng, list(pairs)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            op = rng.choice(["replace", "drop", "repeat", "add"])
            if op == "add" or not pairs:
                name = rng.choice(list(names)) if rng.random() < 0.7 else self.text(8)
                pairs.append((name, self.value(*names.get(name, ()))))
                continue
            i = rng.randrange(len(pairs))
            name = pairs[i][0]
            if op == "replace":
                pairs[i] = (name, self.value(*names.get(name, ())))
            elif op == "drop":
                del pairs[i]
            else:
                pairs.insert(i, (name, self.value(pairs[i][1], *names.get(name, ()))))
        return pairs

    def random_params(self, names: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
        rng = self.rng
        chosen = rng.sample(list(names), rng.randint(0, len(names)))
        pairs = [(name, self.value(*names[name])) for name in chosen]
        pairs += [(self.text(8), self.text()) for _ in range(rng.randint(0, 2))]
        return pairs


def b64(data: bytes | str) -> str:
    data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def form(pairs) -> bytes:
    def q(value: str) -> str:
        return quote(value.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{q(k)}={q(v)}" for k, v in pairs).encode("ascii")


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode("utf-8", "surrogatepass")).decode()


# --- raw HTTP ------------------------------------------------------------------------------


GUNICORN_400 = b"<h1><p>Bad Request</p></h1>"  # gunicorn's own page for a request it cannot parse


class NoAnswer(Exception):
    pass


def send(
    port: int, method: str, path: str, query: bytes = b"", body: bytes = b"", headers=()
) -> tuple[int, dict, bytes]:
    target = quote(path.encode("utf-8", "surrogatepass"), safe="/%:@-._~!$&'()*+,;=").encode()
    if query:
        target += b"?" + query
    lines = [f"{method} ".encode() + target + b" HTTP/1.1", f"Host: 127.0.0.1:{port}".encode(), b"Connection: close"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}".encode())
    for name, value in headers:
        value = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        lines.append(name.encode() + b": " + value.replace(b"\r", b"").replace(b"\n", b""))
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        raise NoAnswer(type(exc).__name__) from exc
    data = b"".join(chunks)
    head, _, payload = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not match:
        raise NoAnswer("no status line")
    response_headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        response_headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if response_headers.get("transfer-encoding", "").lower() == "chunked":
        payload = dechunk(payload)
    return int(match.group(1)), response_headers, payload


def dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2 :]
    return b"".join(out)


# --- the fuzzer ----------------------------------------------------------------------------


class Fuzzer:
    OAUTH_PREFIXES = ("/oauth/token", "/oauth/introspect", "/oauth/revoke", "/oauth/device-authorization", "/api/")

    def __init__(self, args, data: dict, planner_key, port: int):
        self.args, self.data, self.key, self.port = args, data, planner_key, port
        self.issuer = f"http://127.0.0.1:{port}/oauth"
        self.codes = list(data["codes"])
        self.wallet_requests: list[dict] = []
        self.lock = threading.Lock()
        self.sent = 0
        self.by_class: Counter = Counter()
        self.by_endpoint: Counter = Counter()
        self.server_errors: list[dict] = []
        self.non_json_errors: Counter = Counter()
        self.non_json_examples: list[dict] = []
        self.no_answer: Counter = Counter()
        self.deadline = time.monotonic() + args.max_seconds

    # each returns (label, method, path, query, body, headers, oauth?)

    def token(self, g: Gen):
        rng, d = g.rng, self.data
        auth = ("Authorization", basic("fuzz-plain", d["secret"]))
        names = {
            "grant_type": (
                "code_chain",
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "password",
                DEVICE_CODE,
            ),
            "code": (),
            "authorization_code": (),
            "id_token": (),
            "code_challenge": (d["challenge"],),
            "code_challenge_method": ("S256", "plain"),
            "code_verifier": (d["verifier"],),
            "redirect_uri": (REDIRECT_URI,),
            "refresh_token": (),
            "device_code": (),
            "scope": ("openid read", "read", "read write", "chains:read"),
            "client_id": ("fuzz-plain",),
            "client_secret": (d["secret"],),
            "resource": ("https://rs.example",),
        }
        with self.lock:
            code = self.codes.pop() if self.codes and rng.random() < 0.6 else rng.choice(d["codes"])
        names["code"] = names["authorization_code"] = (code,)
        now = int(time.time())
        plausible = {"iss": "planner", "sub": "planner", "aud": self.issuer, "iat": now, "exp": now + 60}
        plausible.update(jti=secrets.token_hex(8), c_hash=code_hash(code))
        proof = sign_proof(self.key, sub="planner", aud=self.issuer, code=code)
        names["id_token"] = (proof, g.jws(self.key, plausible))
        kind = rng.random()
        if kind < 0.45:
            pairs = [
                ("grant_type", "code_chain"),
                ("authorization_code", code),
                ("id_token", proof if rng.random() < 0.6 else g.jws(self.key, plausible)),
                ("code_challenge", d["challenge"]),
                ("code_challenge_method", "S256"),
            ]
        elif kind < 0.6:
            pairs = [
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", d["verifier"]),
            ]
        elif kind < 0.7:
            pairs = [("grant_type", DEVICE_CODE), ("device_code", g.value()), ("client_id", "fuzz-tv")]
        else:
            pairs = [("grant_type", g.value(*names["grant_type"], "urn:x", "token"))] + g.random_params(names)
        pairs = g.mutate(pairs, names)
        headers = [auth]
        if rng.random() < 0.01:
            headers = [("Authorization", basic("chain-demo", g.value()))]  # a PBKDF2 check
        path = rng.choice(["/oauth/token", "/oauth/token/"])
        return "token", "POST", path, b"", form(pairs), headers + [("Content-Type", FORM)], True

    def authorize(self, g: Gen):
        rng, d = g.rng, self.data
        with self.lock:
            code = rng.choice(d["codes"])
        names = {
            "client_id": ("fuzz-plain", "chain-demo"),
            "response_type": ("code", "id_token", "token", "code id_token"),
            "redirect_uri": (REDIRECT_URI,),
            "scope": ("openid read", "openid", "read write", "email"),
            "state": ("st",),
            "nonce": ("n",),
            "code_challenge": (d["challenge"],),
            "code_challenge_method": ("S256", "plain"),
            "prompt": ("none", "login", "consent"),
            "code": (code,),
            "client_metadata": ("{}", '{"a": 1}', "[]"),
            "claims": ('{"id_token": {}}', "null"),
            "resource": ("https://rs.example",),
        }
        if rng.random() < 0.6:
            pairs = [
                ("client_id", "fuzz-plain"),
                ("response_type", rng.choice(["code", "code", "id_token"])),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "openid read"),
                ("state", "st"),
                ("code_challenge", d["challenge"]),
                ("code_challenge_method", "S256"),
            ]
            if rng.random() < 0.4:
                pairs.append(("code", code))
            pairs = g.mutate(pairs, names)
        else:
            pairs = g.random_params(names)
        headers = [("Cookie", f"sessionid={d['session']}")] if rng.random() < 0.5 else []
        return (
            "authorize",
            "GET",
            rng.choice(["/oauth/authorize/", "/oauth/authorize"]),
            form(pairs),
            b"",
            headers,
            False,
        )

    def wallet_open(self, g: Gen):
        """A wallet request page; its openid:// state and nonce feed direct_post."""
        params = {
            "client_id": "fuzz-plain",
            "response_type": "id_token",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid read",
            "state": "st",
            "code_challenge": self.data["challenge"],
            "code_challenge_method": "S256",
        }
        return "wallet request", "GET", "/oauth/authorize/", form(params.items()), b"", [], False

    def wallet_post(self, g: Gen):
        rng = g.rng
        with self.lock:
            request = rng.choice(self.wallet_requests) if self.wallet_requests else None
        state = request["state"] if request else g.text(43)
        nonce = request["nonce"] if request else g.text()
        key = jwk.JWK.generate(kty="EC", crv="P-256")
        public = {k: v for k, v in key.export_public(as_dict=True).items() if k != "kid"}
        did = "did:jwk:" + b64(json.dumps(public))
        sub = rng.choice([did, did, JWK_THUMBPRINT_URI + key.thumbprint(), JWK_THUMBPRINT_URI + key.thumbprint() + "é"])
        now = int(time.time())
        claims = {"iss": sub, "sub": sub, "aud": self.issuer, "nonce": nonce, "iat": now, "exp": now + 120}
        if sub.startswith(JWK_THUMBPRINT_URI):
            claims["sub_jwk"] = public
        key["kid"] = key.thumbprint()
        id_token = g.jws(key, claims, alg="ES256")
        pairs = g.mutate([("state", state), ("id_token", id_token)], {"state": (state,), "id_token": (id_token,)})
        path = rng.choice(["/oauth/wallet/response", "/oauth/wallet/response/"])
        return "wallet direct_post", "POST", path, b"", form(pairs), [("Content-Type", FORM)], True

    def wallet_other(self, g: Gen):
        rng = g.rng
        request_id = rng.choice([str(uuid.uuid4()), g.text(36).replace("/", "")]) or "x"
        action = rng.choice(["status", "complete", "cancel"])
        method = "GET" if action == "complete" and rng.random() < 0.5 else "POST"
        body = form([("poll", g.value())]) if method == "POST" else b""
        query = form([("response_code", g.value())]) if method == "GET" else b""
        path = f"/oauth/wallet/requests/{request_id}/{action}"
        json_answers = action == "status" and _is_uuid(request_id)  # another id matches no URL: Django's 404 page
        return f"wallet {action}", method, path, query, body, [("Content-Type", FORM)], json_answers

    def introspect(self, g: Gen):
        rng, d = g.rng, self.data
        names = {"token": (d["tokens"]["staff"], "x"), "token_type_hint": ("access_token", "refresh_token")}
        pairs = (
            g.random_params(names)
            if rng.random() < 0.3
            else g.mutate([("token", g.value(d["tokens"]["staff"]))], names)
        )
        auth = rng.choice(
            [
                basic("fuzz-plain", d["secret"]),
                "Bearer " + d["tokens"]["introspection"],
                "Bearer " + d["tokens"]["staff"],
                basic(g.value("fuzz-plain"), g.value()),
                "Basic " + g.text(),
            ]
        )
        if rng.random() < 0.2:
            return "introspect", "GET", "/oauth/introspect/", form(pairs), b"", [("Authorization", auth)], True
        headers = [("Authorization", auth), ("Content-Type", FORM)]
        return "introspect", "POST", "/oauth/introspect/", b"", form(pairs), headers, True

    def revoke(self, g: Gen):
        rng, d = g.rng, self.data
        names = {"token": ("x",), "token_type_hint": ("access_token", "refresh_token", "id_token")}
        auth = rng.choice([basic("fuzz-plain", d["secret"]), basic(g.value(), g.value()), "Basic " + g.text()])
        path = rng.choice(["/oauth/revoke_token/", "/oauth/revoke"])
        headers = [("Authorization", auth), ("Content-Type", FORM)]
        return "revoke", "POST", path, b"", form(g.random_params(names)), headers, True

    def device(self, g: Gen):
        names = {"client_id": ("fuzz-tv", "fuzz-plain"), "scope": ("openid", "read", "nope")}
        pairs = g.mutate([("client_id", "fuzz-tv")], names)
        query = form([("client_id", "fuzz-tv")]) if g.rng.random() < 0.1 else b""
        headers = [("Content-Type", FORM)]
        return "device authorization", "POST", "/oauth/device-authorization/", query, form(pairs), headers, True

    def api(self, g: Gen):
        rng, d = g.rng, self.data
        ident = rng.choice([str(uuid.uuid4()), g.text(40).replace("/", "") or "x"])
        method, path = rng.choice(
            [
                ("GET", "/api/chains/"),
                ("GET", "/api/chains/"),
                ("GET", f"/api/chains/{ident}/"),
                ("GET", f"/api/chains/{ident}/verify/"),
                ("GET", f"/api/chains/{ident}/evidence/"),
                ("POST", f"/api/steps/{ident}/revoke/"),
            ]
        )
        filters = {
            "application": ("fuzz-plain",),
            "agent": ("planner",),
            "user": ("alice",),
            "state": ("live", "ended", "revoked"),
            "created_after": ("2020-01-01T00:00:00Z",),
            "created_before": ("2100-01-01T00:00:00+15:00",),
            "limit": ("0", "1", "501"),
            "offset": ("0", "99999999999999999999"),
        }
        query = form(g.random_params(filters)) if method == "GET" else b""
        body = b""
        if method == "POST" or rng.random() < 0.1:
            choice = rng.random()
            if choice < 0.1:
                depth = rng.choice([50, 3000, 100_000])
                body = b"[" * depth + b"]" * depth
            elif choice < 0.7:
                body = g.dumps({"reason": g.json_value()} if rng.random() < 0.7 else g.json_value()).encode(
                    "utf-8", "surrogatepass"
                )
            else:
                body = os.urandom(rng.randint(0, 64))
        token = rng.choice([d["tokens"]["staff"], d["tokens"]["staff"], None, g.text(30)])
        headers = [("Content-Type", "application/json")] if body else []
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        return "api", method, path, query, body, headers, True

    def pages(self, g: Gen):
        rng = g.rng
        if rng.random() < 0.5:
            path = rng.choice(["/admin/login/", "/accounts/login/"])
            body = form([("csrfmiddlewaretoken", g.text(64)), ("username", g.value()), ("password", g.value())])
            headers = [("Cookie", "csrftoken=" + "a" * 32), ("Content-Type", FORM)]
            return "login pages (CSRF)", "POST", path, b"", body, headers, False
        path = rng.choice(
            [
                "/",
                "/oauth/.well-known/openid-configuration",
                "/oauth/.well-known/jwks.json",
                "/oauth/userinfo/",
                "/oauth/device/",
                "/wallet/",
                "/api/schema/",
                "/healthz",
                "/accounts/login/",
                "/admin/",
            ]
        )
        headers = [("Authorization", "Bearer " + g.text())] if path.endswith("userinfo/") else []
        return "other pages", "GET", path, form(g.random_params({"a": ("b",)})), b"", headers, False

    CHOICES = [
        ("token", 30),
        ("authorize", 13),
        ("wallet_open", 2),
        ("wallet_post", 7),
        ("wallet_other", 2),
        ("introspect", 8),
        ("revoke", 6),
        ("device", 5),
        ("api", 16),
        ("pages", 6),
    ]

    def one(self, g: Gen) -> None:
        rng = g.rng
        name = rng.choices([n for n, _ in self.CHOICES], [w for _, w in self.CHOICES])[0]
        label, method, path, query, body, headers, oauth = getattr(self, name)(g)
        if rng.random() < 0.2:  # header chaos: a random Content-Type and Authorization
            headers = [h for h in headers if h[0] not in ("Content-Type", "Authorization")]
            headers.append(("Content-Type", rng.choice(CONTENT_TYPES)))
            if rng.random() < 0.5:
                headers.append(("Authorization", rng.choice(["Basic ", "Bearer ", ""]) + g.text()))
        try:
            status, response_headers, payload = send(self.port, method, path, query, body, headers)
        except NoAnswer as exc:
            with self.lock:
                self.sent += 1
                self.no_answer[f"{label}: {exc}"] += 1
            return
        if name == "wallet_open" and status == 200:
            self._keep_wallet_request(payload)
        with self.lock:
            self.sent += 1
            self.by_class[f"{status // 100}xx"] += 1
            self.by_endpoint[(label, f"{status // 100}xx")] += 1
            if status >= 500:
                if len(self.server_errors) < 20:
                    self.server_errors.append(self._example(label, method, path, status, headers, payload))
            elif status == 400 and GUNICORN_400 in payload:  # a header gunicorn refuses (NUL, controls)
                self.by_endpoint[("(refused by gunicorn before the app)", "4xx")] += 1
            elif oauth and status >= 400 and not _is_json_error(response_headers, payload):
                self.non_json_errors[(label, status)] += 1
                if len(self.non_json_examples) < 10:
                    self.non_json_examples.append(self._example(label, method, path, status, headers, payload))

    def _keep_wallet_request(self, html: bytes) -> None:
        match = re.search(rb'href="(openid://[^"]+)"', html)
        if not match:
            return
        query = urlsplit(match.group(1).decode().replace("&amp;", "&")).query
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        request = {k: unquote(v) for k, v in params.items() if k in ("state", "nonce")}
        if {"state", "nonce"} <= set(request):
            with self.lock:
                self.wallet_requests = [*self.wallet_requests[-50:], request]

    @staticmethod
    def _example(label, method, path, status, headers, payload) -> dict:
        content_type = next((v for k, v in headers if k == "Content-Type"), None)
        return {"endpoint": label, "method": method, "path": path[:80], "status": status,
                "content_type": content_type, "body": payload[:200].decode("utf-8", "replace")}  # fmt: skip

    def run(self) -> float:
        started = time.monotonic()

        def worker(index: int):
            g = Gen(random.Random(self.args.seed * 1000 + index))
            while time.monotonic() < self.deadline:
                with self.lock:
                    if self.sent + self.inflight >= self.args.requests:
                        return
                    self.inflight += 1
                try:
                    self.one(g)
                finally:
                    with self.lock:
                        self.inflight -= 1

        self.inflight = 0
        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(self.args.clients)]
        for thread in threads:
            thread.start()
        last = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            if time.monotonic() - last > 30:
                last = time.monotonic()
                print(f"  … {self.sent} requests, {dict(self.by_class)}", flush=True)
        return time.monotonic() - started


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_json_error(headers: dict, payload: bytes) -> bool:
    if not headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str)


# --- the server ----------------------------------------------------------------------------


def admin_sql(database_url: str, sql: str) -> None:
    import psycopg

    maintenance = urlsplit(database_url)._replace(scheme="postgresql", path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(sql)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--port", type=int, default=18801)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--codes", type=int, default=500, help="DOT codes to hop from")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--report", help="write the figures and examples as JSON here")
    args = parser.parse_args()
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("needs PostgreSQL: --database-url postgres://...")

    began = time.monotonic()
    database_url = urlsplit(args.database_url)._replace(path="/" + DB_NAME).geturl()
    workdir = Path(tempfile.mkdtemp(prefix="h500fuzz_"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IDP_", "CHAIN_", "GUNICORN_", "CELERY_", "PROMETHEUS_", "REDIS_", "CACHE_"))
        and k not in ("DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY", "OIDC_ISSUER", "OIDC_KEY_PATH", "LOG_FORMAT")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="idp_project.settings",
        PYTHONPATH=str(REPO),
        DATABASE_URL=database_url,
        IDP_VAR_DIR=str(workdir / "var"),
        SECRET_KEY=secrets.token_urlsafe(50),
        OIDC_ISSUER=f"http://127.0.0.1:{args.port}/oauth",
        GUNICORN_BIND=f"127.0.0.1:{args.port}",
        GUNICORN_WORKERS=str(args.workers),
        GUNICORN_PROC_NAME="h500fuzz",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "prometheus"),
        CHAIN_LOG_LEVEL="WARNING",
    )
    (workdir / "prometheus").mkdir()
    server = None
    admin_sql(args.database_url, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    admin_sql(args.database_url, f"CREATE DATABASE {DB_NAME}")
    try:

        def manage(*argv: str) -> str:
            result = subprocess.run(
                [PYTHON, "manage.py", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
            )
            if result.returncode:
                raise SystemExit(f"manage.py {argv[0]} failed:\n{result.stderr[-3000:]}")
            return result.stdout

        manage("migrate", "--noinput", "-v0")
        manage("bootstrap_demo")
        setup = subprocess.run(
            [PYTHON, "-c", SETUP, str(args.codes)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        if setup.returncode:
            raise SystemExit(f"setup failed:\n{setup.stderr[-3000:]}")
        data = json.loads(setup.stdout.strip().splitlines()[-1])
        data["challenge"] = b64(hashlib.sha256(data["verifier"].encode()).digest())
        planner_key = load_private_key(str(workdir / "var" / "agents" / "planner.json"))

        log = open(workdir / "gunicorn.log", "wb")  # noqa: SIM115 (kept open while the server runs)
        server = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", str(REPO / "deploy" / "gunicorn.conf.py")],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        ready_by = time.monotonic() + 90
        while True:
            with contextlib.suppress(NoAnswer):
                if send(args.port, "GET", "/readyz")[0] == 200:
                    break
            if server.poll() is not None or time.monotonic() > ready_by:
                raise SystemExit("gunicorn did not become ready:\n" + (workdir / "gunicorn.log").read_text()[-3000:])
            time.sleep(0.3)
        setup_s = time.monotonic() - began
        print(
            f"fuzzing http://127.0.0.1:{args.port} (gunicorn, {args.workers} workers, PostgreSQL {DB_NAME}): "
            f"{args.requests} requests at most, {args.max_seconds:.0f} s at most, {args.clients} clients, "
            f"seed {args.seed} (setup {setup_s:.0f} s)",
            flush=True,
        )
        fuzzer = Fuzzer(args, data, planner_key, args.port)
        elapsed = fuzzer.run()
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
        with contextlib.suppress(Exception):
            admin_sql(args.database_url, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        server_log = (
            (workdir / "gunicorn.log").read_text(errors="replace") if (workdir / "gunicorn.log").exists() else ""
        )
        shutil.rmtree(workdir, ignore_errors=True)

    no_answer = sum(fuzzer.no_answer.values())
    print(f"\n{fuzzer.sent} requests in {elapsed:.1f} s ({fuzzer.sent / elapsed:.0f}/s)")
    for cls in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        print(f"  {cls}: {fuzzer.by_class.get(cls, 0)}")
    print(f"  no answer: {no_answer}" + (f" {dict(fuzzer.no_answer)}" if no_answer else ""))
    print("by endpoint:")
    for label in sorted({label for label, _ in fuzzer.by_endpoint}):
        counts = {cls: n for (lab, cls), n in sorted(fuzzer.by_endpoint.items()) if lab == label}
        print(f"  {label}: {counts}")
    print(f"OAuth/API errors ≥ 400 without a JSON error body: {sum(fuzzer.non_json_errors.values())}")
    for (label, status), count in sorted(fuzzer.non_json_errors.items()):
        print(f"  {label} {status}: {count}")
    tracebacks = server_log.count("Traceback (most recent call last)")
    print(f"tracebacks in the gunicorn log: {tracebacks}")
    for example in fuzzer.server_errors[:10]:
        print("  5xx:", json.dumps(example, ensure_ascii=True))
    for example in fuzzer.non_json_examples[:5]:
        print("  non-JSON error:", json.dumps(example, ensure_ascii=True))
    if args.report:
        Path(args.report).write_text(
            json.dumps(
                {
                    "requests": fuzzer.sent,
                    "seconds": round(elapsed, 1),
                    "by_class": dict(fuzzer.by_class),
                    "no_answer": dict(fuzzer.no_answer),
                    "by_endpoint": {f"{k[0]} {k[1]}": v for k, v in sorted(fuzzer.by_endpoint.items())},
                    "non_json_errors": {f"{k[0]} {k[1]}": v for k, v in sorted(fuzzer.non_json_errors.items())},
                    "server_errors": fuzzer.server_errors,
                    "tracebacks": tracebacks,
                },
                indent=2,
            )
        )
    print(f"total runtime {time.monotonic() - began:.1f} s")
    return 1 if fuzzer.by_class.get("5xx", 0) or no_answer else 0


if __name__ == "__main__":
    sys.exit(main())
