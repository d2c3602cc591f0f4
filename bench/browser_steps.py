"""What the two browser steps cost (the user step and the wallet step), next to DOT's own authorize flow.

    .venv/bin/python bench/browser_steps.py [--n 200] [--hasher md5|pbkdf2] [--database-url URL]

One run, one throw-away database (a temp SQLite file, or a PostgreSQL database
``chain_browser_bench`` created next to the one in --database-url, which is never
touched; both are deleted at the end; not ``chain_bench``, so bench/hops.py may run at
the same time), settings ``tests.settings`` with the chosen client-secret hasher.
Requests go through Django's test Client: in-process WSGI, full middleware, no
network, one thread. Each round runs every operation once, in this fixed order (no
random choices), so drift affects all alike; every code is PKCE S256, scope
"openid read write", one confidential client:

  (a0) DOT's authorize on a stock DOT view (oauthlib Server + OAuth2Validator +
       OAuthLibCore, mounted at /dot/authorize/ by this script): GET the consent page,
       POST allow -> 302 with a code. The person (alice) has a session. The baseline.
  (a)  the same GET + POST on the IdP's /oauth/authorize/ without code= (chain_grant's
       AuthorizationView and validator on DOT's path): what the IdP pays for plain DOT
  (u)  the user step: the same GET + POST with code=<previous code>; the consent page
       shows the chain. Untimed preparation: a DOT code from (a) and one code_chain
       hop at the token endpoint (as in bench/hops.py), whose code is the previous one.
  (w1) the wallet request page: GET /oauth/authorize/?response_type=id_token (QR code,
       openid:// link); a browser without a session (the wallet step needs no login).
       Also timed, outside any request: the page's QR code alone (segno encoding +
       inline SVG, as wallet_views.start makes it), from the page's own openid:// URL.
  (w2) the wallet's direct_post: POST /oauth/wallet/response with a HeadlessWallet's
       self-issued id_token (one wallet for the whole run: its account is created in
       the first warm-up round). Its ES256 signing is timed separately (wallet side).
       Then one status poll of the waiting page (shown, not in the total: the page
       polls once a second while the person is at the wallet).
  (w3) the browser's completion: POST .../complete with the poll token -> 302 with code
  (x)  authorization_code exchanges: a plain DOT code at a stock DOT token view (x0,
       /dot/token/), and at the IdP's /oauth/token: a plain DOT code, the wallet-root
       code from (w3), the user-step code from (u) (depth 2)
Timed region: the client.get() / client.post() call only; GET + POST and w1 + w2 + w3
are per-round sums. Untimed, in the same round: PKCE pairs, the previous code of (u),
a plain code for (x), parsing the pages. SQL/req is counted with CaptureQueriesContext
over the untimed warm-up rounds (the first one left out: it fills caches and creates
the wallet's account).

Reading the ratios: a median over the comparable stock DOT median (u and w against
(a0) GET + POST, their parts against its GET or POST, exchanges against x0). The
browser steps authenticate no client, so the hasher changes only the exchanges: with
--hasher pbkdf2 each pays Django's PBKDF2 client-secret check (hundreds of ms, see
bench/hops.py), which swamps the rest, and a round makes five token requests (seconds
a round: use --n 20 or so); md5, the default here, shows chain_grant's own work.
Nothing asserts on time; each response is checked (status, code, redirect), and the
first round checks the new steps (a user step at depth 2, a wallet root).
"""
# ruff: noqa: E402  (Django is configured before the imports that need it)

import argparse
import base64
import json
import statistics
import sys
import time
import types
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _setup import HASHERS, database_version, run, setup_django  # noqa: E402  (bench/, the script's own folder)

REDIRECT_URI, SECRET, ISSUER = "http://127.0.0.1:8765/oauth-callback", "s3cret-for-bench", "http://testserver/oauth"
SCOPE, BENCH_DB, WARMUP = "openid read write", "chain_browser_bench", 5

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--n", type=int, default=200, help="timed rounds (each runs every operation once)")
parser.add_argument("--hasher", choices=sorted(HASHERS), default="md5")
parser.add_argument("--database-url", help="postgres://... (a database chain_browser_bench is created); default SQLite")
ARGS = parser.parse_args()
if ARGS.n < 1:
    parser.error("--n must be positive")


cleanup = setup_django(ARGS.database_url, BENCH_DB, ARGS.hasher)
import segno
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from oauth2_provider import views as dot_views
from oauth2_provider.models import get_application_model
from oauth2_provider.oauth2_backends import OAuthLibCore
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.openid import Server

from chain_grant.client import generate_key, pkce_pair, sign_proof
from chain_grant.client.wallet import HeadlessWallet, parse_request_url, request_url_from_html
from chain_grant.core import agents, lifecycle
from chain_grant.models import ChainClient

STOCK = {"server_class": Server, "validator_class": OAuth2Validator, "oauthlib_backend_class": OAuthLibCore}
URLS = types.ModuleType("bench_urls")  # the IdP's URLs plus stock DOT views for the baselines
URLS.urlpatterns = [
    path("dot/authorize/", type("StockAuthorize", (dot_views.AuthorizationView,), STOCK).as_view()),
    path("dot/token/", type("StockToken", (dot_views.TokenView,), STOCK).as_view()),
    path("", include("idp_project.urls")),
]
settings.ROOT_URLCONF = URLS


def fail(message):
    raise RuntimeError(message)


def between(text: str, before: str, after: str) -> str:
    start = text.index(before) + len(before)
    return text[start : text.index(after, start)]


def code_from(response, state: str) -> str:
    """The code on the client's redirect (asserting the redirect_uri and state)."""
    location = response["Location"]
    query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    if not location.startswith(REDIRECT_URI + "?") or query.get("state") != state or "code" not in query:
        fail(f"unexpected redirect: {location[:300]}")
    return query["code"]


class Bench:
    def __init__(self):
        App = get_application_model()
        alice = get_user_model().objects.create_user("alice", "alice@example.com", "alice-pw")
        self.app = App.objects.create(
            name="Bench client",
            client_id="chain-client",
            client_secret=SECRET,
            client_type=App.CLIENT_CONFIDENTIAL,
            authorization_grant_type=App.GRANT_AUTHORIZATION_CODE,
            redirect_uris=REDIRECT_URI,
            user=alice,
            algorithm=App.RS256_ALGORITHM,
        )
        ChainClient.objects.create(application=self.app)
        self.planner = generate_key("EC")
        agents.register_agent("planner", json.dumps(self.planner.export_public(as_dict=True)), [self.app], SCOPE)
        self.wallet = HeadlessWallet.generate()  # ES256, a did:jwk
        self.browser = Client()  # alice's browser, logged in: (a0), (a), (u)
        self.browser.force_login(alice)
        self.wallet_browser = Client()  # the wallet step's browser: no session at the IdP
        self.device = Client()  # the wallet's own HTTP (direct_post)
        self.rp = Client()  # the client's back channel: token endpoint, basic auth
        self.basic = "Basic " + base64.b64encode(f"{self.app.client_id}:{SECRET}".encode()).decode()
        self.ms, self.queries, self.sizes = {}, {}, {}

    def call(self, label, capture, client, method, url, data=None, expect=200, **extra):
        send = getattr(client, method)
        if capture:
            with CaptureQueriesContext(connection) as ctx:
                response = send(url, data, **extra)
            self.queries.setdefault(label, []).append(len(ctx))
        else:
            start = time.perf_counter()
            response = send(url, data, **extra)
            self.ms.setdefault(label, []).append((time.perf_counter() - start) * 1000)
        if response.status_code != expect:
            fail(f"{label}: HTTP {response.status_code} (expected {expect}) {response.content[:300]!r}")
        return response

    def total(self, label, parts, capture):
        """A per-round sum (GET + POST, w1 + w2 + w3) of time or of SQL queries."""
        store = self.queries if capture else self.ms
        store.setdefault(label, []).append(sum(store[part][-1] for part in parts))

    def params(self, challenge, **extra):
        return {
            "client_id": self.app.client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": SCOPE,
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }

    def consent(self, label, capture, endpoint, params):
        """GET the consent page, POST allow (DOT's form: the request's fields, not code=) -> the new code."""
        url = endpoint + "?" + urlencode(params)
        page = self.call(label + "-get", capture, self.browser, "get", url)
        if b'name="allow"' not in page.content:
            fail(f"{label}: no consent form")
        form = {k: v for k, v in params.items() if k != "code"}
        done = self.call(label + "-post", capture, self.browser, "post", url, {**form, "allow": "Authorize"}, 302)
        self.total(label, (label + "-get", label + "-post"), capture)
        return code_from(done, params["state"])

    def plain_code(self):
        """Untimed: a DOT code from the IdP's authorize endpoint (consent POST), and its verifier."""
        verifier, challenge = pkce_pair()
        params = self.params(challenge)
        done = self.browser.post("/oauth/authorize/?" + urlencode(params), {**params, "allow": "Authorize"})
        return code_from(done, "st"), verifier

    def hop(self, code):
        """Untimed: one code_chain hop by the planner agent; its code is the user step's previous code."""
        proof = sign_proof(self.planner, sub="planner", aud=ISSUER, code=code, lifetime=300)
        _, challenge = pkce_pair()
        data = {
            "grant_type": "code_chain",
            "authorization_code": code,
            "id_token": proof,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        response = self.rp.post("/oauth/token", data, HTTP_AUTHORIZATION=self.basic)
        if response.status_code != 200:
            fail(f"hop: HTTP {response.status_code} {response.content[:300]!r}")
        return response.json()["authorization_code"]

    def wallet_step(self, capture, challenge):
        params = {**self.params(challenge, state="st-w", client_metadata="{}"), "response_type": "id_token"}
        page = self.call("w1", capture, self.wallet_browser, "get", "/oauth/authorize/?" + urlencode(params))
        html = page.content.decode()
        url = request_url_from_html(html)
        request = parse_request_url(url)
        poll = between(html, 'name="poll" value="', '"')
        complete = between(html, 'id="complete-form" method="post" action="', '"')
        svg = html[html.index("<svg") : html.index("</svg>") + len("</svg>")]
        self.sizes = {"page": len(page.content), "svg": len(svg.encode()), "url": len(url)}
        if not capture:  # the page's QR code alone, as wallet_views.start makes it (no DB, no template)
            start = time.perf_counter()
            segno.make(url, error="m").svg_inline(scale=3, dark="#1d232b")
            self.ms.setdefault("qr", []).append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        id_token = self.wallet.id_token(request)
        if not capture:
            self.ms.setdefault("sign", []).append((time.perf_counter() - start) * 1000)
        answer = self.call(
            "w2",
            capture,
            self.device,
            "post",
            request["response_uri"],
            {"id_token": id_token, "state": request["state"]},
        )
        if "redirect_uri" not in answer.json():
            fail(f"direct_post: {answer.json()}")
        status = self.call(
            "wpoll", capture, self.wallet_browser, "post", complete.removesuffix("complete") + "status", {"poll": poll}
        )
        if status.json() != {"status": "verified"}:
            fail(f"status poll: {status.json()}")
        done = self.call("w3", capture, self.wallet_browser, "post", complete, {"poll": poll}, 302)
        self.total("w", ("w1", "w2", "w3"), capture)
        return code_from(done, "st-w")

    def exchange(self, label, url, code, verifier, capture):
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
        body = self.call(label, capture, self.rp, "post", url, data, HTTP_AUTHORIZATION=self.basic).json()
        if "access_token" not in body or "id_token" not in body:
            fail(f"{label}: {body}")

    def round(self, capture=False, check=False):
        verifier0, challenge0 = pkce_pair()
        code0 = self.consent("a0", capture, "/dot/authorize/", self.params(challenge0))
        _, challenge_a = pkce_pair()
        previous = self.hop(self.consent("a", capture, "/oauth/authorize/", self.params(challenge_a)))
        verifier_u, challenge_u = pkce_pair()
        code_u = self.consent("u", capture, "/oauth/authorize/", self.params(challenge_u, code=previous))
        verifier_w, challenge_w = pkce_pair()
        code_w = self.wallet_step(capture, challenge_w)
        if check:
            user, wallet = lifecycle.find_step(code_u), lifecycle.find_step(code_w)
            if (user.kind, user.depth, wallet.kind, wallet.depth) != ("user", 2, "wallet", 0):
                fail(f"unexpected steps: {user.kind}@{user.depth}, {wallet.kind}@{wallet.depth}")
        self.exchange("x0", "/dot/token/", code0, verifier0, capture)
        self.exchange("x-plain", "/oauth/token", *self.plain_code(), capture)
        self.exchange("x-wallet", "/oauth/token", code_w, verifier_w, capture)
        self.exchange("x-user", "/oauth/token", code_u, verifier_u, capture)


# (key, title, comparable stock DOT figure)
ROWS = [
    ("a0-get", "(a0) stock DOT: GET consent page", None),
    ("a0-post", "(a0) stock DOT: POST allow -> code", None),
    ("a0", "(a0) stock DOT: GET + POST", None),
    ("a", "(a) IdP, no code=: GET + POST", "a0"),
    ("u-get", "(u) user step: GET consent page (chain)", "a0-get"),
    ("u-post", "(u) user step: POST allow -> code", "a0-post"),
    ("u", "(u) user step: GET + POST", "a0"),
    ("w1", "(w1) wallet request page GET (QR)", "a0-get"),
    ("qr", "     of which its QR code (segno, no DB)", None),
    ("sign", "(w2) wallet side: sign id_token (ES256)", None),
    ("w2", "(w2) wallet direct_post (verify)", None),
    ("w3", "(w3) browser POST complete -> code", "a0-post"),
    ("w", "(w) wallet step: w1 + w2 + w3", "a0"),
    ("wpoll", "    + one status poll (1/s while waiting)", None),
    ("x0", "(x0) stock DOT token: plain DOT code", None),
    ("x-plain", "(x) IdP token: plain DOT code", "x0"),
    ("x-wallet", "(x) IdP token: wallet-root code", "x0"),
    ("x-user", "(x) IdP token: user-step code (depth 2)", "x0"),
]


def report(bench, version):
    print(
        f"chain_grant browser-step benchmark: n={ARGS.n} timed rounds (+{WARMUP} warm-up rounds counting SQL), "
        f"client-secret hasher={ARGS.hasher}, database={connection.vendor} {version}"
    )
    print("Django test Client (in-process WSGI, full middleware, no network); single thread; times in ms;")
    print(
        "timed region = the client call; sums per round; SQL/req from the warm-up rounds; ratio = median / "
        "the stock DOT median named"
    )
    print(f"{'operation':<44}{'median':>9}{'p95':>9}{'SQL/req':>9}{'ratio':>8}  vs")
    medians = {}
    for key, title, base in ROWS:
        ordered = sorted(bench.ms[key])
        medians[key] = statistics.median(ordered)
        p95 = ordered[-(-len(ordered) * 95 // 100) - 1]  # nearest rank
        counts = bench.queries.get(key, [])[1:]  # the first warm-up round also fills caches
        sql = "-" if not counts else f"{min(counts)}" + (f"-{max(counts)}" if max(counts) > min(counts) else "")
        ratio = f"x{medians[key] / medians[base]:.2f}" if base else ""
        print(f"{title:<44}{medians[key]:>9.2f}{p95:>9.2f}{sql:>9}{ratio:>8}  {base or ''}".rstrip())
    print(
        "against the IdP's own plain path: "
        + "; ".join(
            f"{num} / {den} x{medians[num] / medians[den]:.2f}"
            for num, den in (("u", "a"), ("w", "a"), ("x-wallet", "x-plain"), ("x-user", "x-plain"))
        )
    )
    print(
        f"wallet request page: {bench.sizes['page']:,} bytes, of which the QR code's inline SVG "
        f"{bench.sizes['svg']:,} bytes; openid:// URL {bench.sizes['url']} characters"
    )


def main():
    call_command("migrate", verbosity=0)
    bench = Bench()
    for i in range(WARMUP):
        bench.round(capture=True, check=i == 0)
    for _ in range(ARGS.n):
        bench.round()
    version = database_version()
    report(bench, version)


if __name__ == "__main__":
    run(main, cleanup, STARTED, "set-up, migrate, warm-up, timed rounds")
