"""What a chain_grant hop costs at the token endpoint, next to DOT's own grants.

    .venv/bin/python bench/hops.py [--n 200] [--hasher pbkdf2|md5] [--database-url URL]

One run, one throw-away database (a temp SQLite file, or a PostgreSQL database
``chain_bench`` created next to the one in --database-url, which is never touched;
both are deleted at the end), settings ``tests.settings`` with the chosen client-secret
hasher. Requests go through Django's test Client: in-process WSGI, full middleware,
no network, one thread. Each round runs every operation once, in this fixed order
(no random choices), so drift affects all alike:

  (a0) authorization_code exchange on a stock DOT token view (oauthlib Server +
       OAuth2Validator, mounted at /dot/token/ by this script): DOT without chain_grant
  (a)  authorization_code exchange of a plain DOT code on the IdP's /oauth/token
  (b)  client_credentials (a second confidential client)
  (c)  code_chain hop: c1 from a DOT code (also creates the chain's root step),
       c2 from a chained code (depth 1 -> 2); the agent's ES256 proof signing is
       timed separately (client side), outside the request
  (k)  client authentication, the same depth 1 -> 2 hop three ways: c2 above (the
       secret hashed with --hasher: "plain"); c2-pkjwt, private_key_jwt (RFC 7523: an
       ES256 client assertion instead of the secret; the assertion signing timed
       client side, separately, like the proof); c2-pbkdf2, a second client whose
       secret is hashed with Django's PBKDF2 (DOT's default) even with --hasher md5.
       Each from its own depth-1 code (an untimed private_key_jwt hop from a fresh DOT
       code), so the three hops have the same shape; d-pkjwt exchanges c2-pkjwt's code
       with an assertion
  (d)  authorization_code exchange of the depth-2 chained code
  (t)  RFC 8693 token exchange of (d)'s depth-2 token, the planner's actor_token
       (signed client side, timed separately): a depth-3 step and its access token
  (e)  introspection (RFC 7662) of the plain token from (a) and of the chained token
       from (d) (chain_id, chain_depth, act with two actors); (e0) = stock DOT view
Timed region: the client.post() call only. Untimed, in the same round: codes from the
authorize endpoint (consent POST), PKCE pairs, proof signing. SQL/req is counted with
CaptureQueriesContext over the untimed warm-up rounds.

Reading the ratios: a chain_grant median over the comparable DOT median. With
--hasher pbkdf2 every request pays Django's PBKDF2 client-secret check (~190 ms; see
docs/architecture.md, "Client authentication cost"), which swamps everything else:
what an agent workflow pays per hop. With
--hasher md5 that cost is gone and the ratios show chain_grant's own work (proof
verification, chain rows, the act lookup). Timings are informative: nothing asserts.
"""
# ruff: noqa: E402  (Django is configured before the imports that need it)

import argparse
import base64
import json
import statistics
import sys
import time
import types
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _setup import HASHERS, database_version, run, setup_django  # noqa: E402  (bench/, the script's own folder)

REDIRECT_URI, SECRET, ISSUER = "http://127.0.0.1:8765/oauth-callback", "s3cret-for-bench", "http://testserver/oauth"
BENCH_DB, WARMUP = "chain_bench", 5

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--n", type=int, default=200, help="timed rounds (each runs every operation once)")
parser.add_argument("--hasher", choices=sorted(HASHERS), default="pbkdf2")
parser.add_argument("--database-url", help="postgres://... (a database chain_bench is created); default SQLite")
ARGS = parser.parse_args()


cleanup = setup_django(ARGS.database_url, BENCH_DB, ARGS.hasher)

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone
from oauth2_provider import views as dot_views
from oauth2_provider.models import get_application_model, get_grant_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import generate_token
from oauthlib.openid import Server

from chain_grant.client import (
    CLIENT_ASSERTION_TYPE,
    actor_token,
    client_assertion,
    generate_key,
    pkce_pair,
    sign_proof,
)
from chain_grant.client.keys import dpop_proof
from chain_grant.core import agents, client_auth, proofs
from chain_grant.models import ChainClient

STOCK = {"server_class": Server, "validator_class": OAuth2Validator}
URLS = types.ModuleType("bench_urls")  # the IdP's URLs plus stock DOT views for the baselines
URLS.urlpatterns = [
    path("dot/token/", type("StockToken", (dot_views.TokenView,), STOCK).as_view()),
    path("dot/introspect/", type("StockIntrospect", (dot_views.IntrospectTokenView,), STOCK).as_view()),
    path("", include("idp_project.urls")),
]
settings.ROOT_URLCONF = URLS


class Bench:
    def __init__(self):
        App = get_application_model()
        alice = get_user_model().objects.create_user("alice", "alice@example.com", "alice-pw")
        common = {
            "client_secret": SECRET,
            "client_type": App.CLIENT_CONFIDENTIAL,
            "user": alice,
            "redirect_uris": REDIRECT_URI,
            "algorithm": App.RS256_ALGORITHM,
        }
        self.app = App.objects.create(client_id="chain-client", authorization_grant_type="authorization-code", **common)
        self.cc_app = App.objects.create(client_id="cc-client", authorization_grant_type="client-credentials", **common)
        # DOT's default: the secret hashed with PBKDF2 (stored pre-hashed: DOT keeps a hash as it is).
        pbkdf2 = {**common, "client_secret": make_password(SECRET, hasher="pbkdf2_sha256")}
        self.pbkdf2_app = App.objects.create(
            client_id="chain-client-pbkdf2", authorization_grant_type="authorization-code", **pbkdf2
        )
        if not self.pbkdf2_app.client_secret.startswith("pbkdf2_sha256$"):
            raise RuntimeError("the PBKDF2 client's secret is not PBKDF2-hashed")
        self.client_keys = {}  # private_key_jwt: an ES256 key per client (its secret accepted too)
        for app in (self.app, self.pbkdf2_app):
            ChainClient.objects.create(application=app)
            self.client_keys[app.client_id] = key = generate_key("EC")
            client_auth.register_keys(app, json.dumps(key.export_public(as_dict=True)), key_only=False)
        self.keys = {name: generate_key("EC") for name in ("planner", "coder")}
        self.dpop_key = generate_key("EC")  # the caller's DPoP key
        for name, key in self.keys.items():
            public = json.dumps(key.export_public(as_dict=True))
            agents.register_agent(name, public, [self.app, self.pbkdf2_app], "openid read write")
        self.client = Client()
        self.alice = alice
        self.client.force_login(alice)  # a session for the authorize endpoint; basic auth elsewhere
        self.ms, self.queries = {}, {}

    def post(self, label, capture, url, data, app, pkjwt=False, dpop=False):
        """POST, authenticated with the secret (HTTP Basic) or, ``pkjwt``, a client assertion
        (signed before the timed region, its signing time recorded as "sign-assertion")."""
        auth = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{app.client_id}:{SECRET}".encode()).decode()}
        if pkjwt:
            start = time.perf_counter()
            assertion = client_assertion(self.client_keys[app.client_id], client_id=app.client_id, aud=ISSUER)
            if label and not capture:
                self.ms.setdefault("sign-assertion", []).append((time.perf_counter() - start) * 1000)
            data, auth = {**data, "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}, {}
        if dpop:  # a DPoP proof (RFC 9449) for this request, signed before the timed region
            start = time.perf_counter()
            auth = {**auth, "HTTP_DPOP": dpop_proof(self.dpop_key, htm="POST", htu="http://testserver" + url)}
            if label and not capture:
                self.ms.setdefault("sign-dpop", []).append((time.perf_counter() - start) * 1000)
        if label is None:  # set-up for a timed request: neither timed nor counted
            response = self.client.post(url, data, **auth)
        elif capture:
            with CaptureQueriesContext(connection) as ctx:
                response = self.client.post(url, data, **auth)
            self.queries.setdefault(label, []).append(len(ctx))
        else:
            start = time.perf_counter()
            response = self.client.post(url, data, **auth)
            self.ms.setdefault(label, []).append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{label}: HTTP {response.status_code} {response.content[:300]!r}")
        return response.json()

    def authorize(self, app=None):
        """A fresh DOT code from the authorize endpoint (consent POST), with its PKCE verifier."""
        verifier, challenge = pkce_pair()
        params = {
            "client_id": (app or self.app).client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid read write",
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        response = self.client.post("/oauth/authorize/?" + urlencode(params), {**params, "allow": "Authorize"})
        if response.status_code != 302:
            raise RuntimeError(f"authorize: HTTP {response.status_code}")
        return parse_qs(urlparse(response["Location"]).query)["code"][0], verifier

    def stock_code(self):
        """A code as stock DOT stores it (in clear: chain_grant's authorize keeps digests,
        which DOT's own validator would not find), with its PKCE verifier."""
        verifier, challenge = pkce_pair()
        code = generate_token()
        get_grant_model().objects.create(
            application=self.app,
            user=self.alice,
            code=code,
            expires=timezone.now() + timedelta(minutes=5),
            redirect_uri=REDIRECT_URI,
            scope="openid read write",
            code_challenge=challenge,
            code_challenge_method="S256",
            claims="{}",
        )
        return code, verifier

    def hop(self, label, code, agent, capture, app=None, pkjwt=False, dpop=False):
        start = time.perf_counter()
        proof = sign_proof(self.keys[agent], sub=agent, aud=ISSUER, code=code, lifetime=300)
        if not capture and label:
            self.ms.setdefault("sign", []).append((time.perf_counter() - start) * 1000)
        verifier, challenge = pkce_pair()
        data = {
            "grant_type": "code_chain",
            "authorization_code": code,
            "id_token": proof,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        body = self.post(label, capture, "/oauth/token", data, app or self.app, pkjwt, dpop)
        return body["authorization_code"], verifier

    def exchange(self, label, url, code, verifier, capture, pkjwt=False):
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
        return self.post(label, capture, url, data, self.app, pkjwt)["access_token"]

    def round(self, capture=False):
        self.exchange("a0", "/dot/token/", *self.stock_code(), capture)
        plain = self.exchange("a", "/oauth/token", *self.authorize(), capture)
        self.post("b", capture, "/oauth/token", {"grant_type": "client_credentials", "scope": "read"}, self.cc_app)
        code1, _ = self.hop("c1", self.authorize()[0], "planner", capture)
        chained = self.exchange("d", "/oauth/token", *self.hop("c2", code1, "coder", capture), capture)
        # (k) the same depth 1 -> 2 hop with private_key_jwt, and by the PBKDF2 client
        pkjwt_code1, _ = self.hop(None, self.authorize()[0], "planner", capture, pkjwt=True)
        pkjwt_code2 = self.hop("c2-pkjwt", pkjwt_code1, "coder", capture, pkjwt=True)
        self.exchange("d-pkjwt", "/oauth/token", *pkjwt_code2, capture, pkjwt=True)
        # (p) the same hop with a DPoP proof (its code is bound to the key)
        dpop_code1, _ = self.hop(None, self.authorize()[0], "planner", capture)
        self.hop("c2-dpop", dpop_code1, "coder", capture, dpop=True)
        pbkdf2_code1, _ = self.hop(None, self.authorize(self.pbkdf2_app)[0], "planner", capture, self.pbkdf2_app, True)
        self.hop("c2-pbkdf2", pbkdf2_code1, "coder", capture, self.pbkdf2_app)
        # (t) RFC 8693 token exchange: the depth-2 token from (d), the planner acting next
        start = time.perf_counter()
        actor = actor_token(self.keys["planner"], sub="planner", aud=ISSUER, subject_token=chained)
        if not capture:
            self.ms.setdefault("sign-actor", []).append((time.perf_counter() - start) * 1000)
        exchange = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": chained,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "actor_token": actor,
            "actor_token_type": "urn:ietf:params:oauth:token-type:jwt",
        }
        self.post("t", capture, "/oauth/token", exchange, self.app)
        self.post("e0", capture, "/dot/introspect/", {"token": plain}, self.app)
        self.post("e-plain", capture, "/oauth/introspect/", {"token": plain}, self.app)
        body = self.post("e-chained", capture, "/oauth/introspect/", {"token": chained}, self.app)
        if body.get("act") != {"sub": "coder", "act": {"sub": "planner"}}:
            raise RuntimeError(f"unexpected introspection: {body}")


def proof_crypto(n):
    """Median sign / verify ms (jwcrypto only, no DB, no HTTP) for ES256 and RS512 proofs."""
    out = {}
    for kty, alg in (("EC", "ES256"), ("RSA", "RS512")):
        key, signing, verifying = generate_key(kty), [], []
        public = key.export_public(as_dict=True)
        for _ in range(n):
            start = time.perf_counter()
            token = sign_proof(key, sub="agent", aud=ISSUER, code="code", alg=alg)
            signing.append(time.perf_counter() - start)
            start = time.perf_counter()
            proofs.verify_signature(token, public, alg)
            verifying.append(time.perf_counter() - start)
        out[alg] = (statistics.median(signing) * 1000, statistics.median(verifying) * 1000)
    return out


ROWS = [
    ("a0", "stock DOT: authorization_code"),
    ("a", "(a) authorization_code, plain DOT code"),
    ("b", "(b) client_credentials"),
    ("c1", "(c) code_chain hop, DOT code -> depth 1"),
    ("c2", "(c) code_chain hop, depth 1 -> depth 2"),
    ("sign", "(c) client side: sign ES256 proof"),
    ("c2-pkjwt", "(k) hop 1 -> 2, private_key_jwt (ES256)"),
    ("c2-pbkdf2", "(k) hop 1 -> 2, secret hashed with PBKDF2"),
    ("sign-assertion", "(k) client side: sign ES256 client assertion"),
    ("c2-dpop", "(p) hop 1 -> 2, DPoP-bound (ES256 proof)"),
    ("sign-dpop", "(p) client side: sign ES256 DPoP proof"),
    ("d", "(d) authorization_code, chained code (depth 2)"),
    ("d-pkjwt", "(d) the same, private_key_jwt (ES256)"),
    ("t", "(t) RFC 8693 token exchange, depth 2 -> 3"),
    ("sign-actor", "(t) client side: sign ES256 actor_token"),
    ("e0", "stock DOT: introspect plain token"),
    ("e-plain", "(e) introspect plain token"),
    ("e-chained", "(e) introspect chained token (act x2)"),
]
RATIOS = [
    ("c1", "a", "(c) first hop / (a)"),
    ("c2", "a", "(c) later hop / (a)"),
    ("d", "a", "(d) / (a)"),
    ("t", "a", "(t) token exchange / (a)"),
    ("t", "c2", "(t) token exchange / (c) hop"),
    ("e-chained", "e-plain", "(e) chained / plain"),
    ("a", "a0", "(a) IdP / stock DOT"),
    ("e-plain", "e0", "(e) plain, IdP / stock DOT"),
    ("c2-pkjwt", "c2", "(k) hop, pkjwt / secret"),
    ("d-pkjwt", "d", "(d) exchange, pkjwt / secret"),
    ("c2-dpop", "c2", "(p) DPoP-bound hop / unbound (<= 1.3)"),
]
# Client authentication, throughput (req/s) of the same hop: (numerator, denominator, title, target).
THROUGHPUT = [
    ("c2-pkjwt", "c2-pbkdf2", "private_key_jwt / PBKDF2-hashed secret", 20.0),
    ("c2-pkjwt", "c2", "private_key_jwt / plain secret (--hasher)", 0.9),
]


def report(bench, version):
    print(
        f"chain_grant hop benchmark: n={ARGS.n} timed rounds (+{WARMUP} warm-up rounds counting SQL), "
        f"client-secret hasher={ARGS.hasher}, database={connection.vendor} {version}"
    )
    print("Django test Client (in-process WSGI, full middleware, no network); single thread; times in ms;")
    print("timed region = the client.post() call; req/s = 1000 / mean ms; SQL/req from the warm-up rounds")
    print(f"{'operation':<50}{'median':>9}{'p95':>9}{'req/s':>9}{'SQL/req':>9}")
    medians, rates = {}, {}
    for key, title in ROWS:
        ordered = sorted(bench.ms[key])
        medians[key], rates[key] = statistics.median(ordered), 1000 * len(ordered) / sum(ordered)
        p95 = ordered[-(-len(ordered) * 95 // 100) - 1]  # nearest rank
        counts = bench.queries.get(key, [])[1:]  # the first warm-up round also fills caches
        sql = "-" if not counts else f"{min(counts)}" + (f"-{max(counts)}" if max(counts) > min(counts) else "")
        print(f"{title:<50}{medians[key]:>9.2f}{p95:>9.2f}{rates[key]:>9.1f}{sql:>9}")
    print("ratios of medians (chain_grant / comparable DOT figure), and SQL per request:")
    for num, den, title in RATIOS:
        print(
            f"  {title:<30} latency x{medians[num] / medians[den]:.2f}   "
            f"SQL {bench.queries[num][-1]}/{bench.queries[den][-1]}"
        )
    print("client authentication, the same hop (depth 1 -> 2), throughput ratios (req/s over req/s):")
    for num, den, title, target in THROUGHPUT:
        ratio = rates[num] / rates[den]
        verdict = "meets" if ratio >= target else "BELOW"
        print(
            f"  {title:<44} x{ratio:>7.2f}   ({rates[num]:.1f} / {rates[den]:.1f} req/s; {verdict} target x{target:g})"
        )
    signing = statistics.median(bench.ms["sign-assertion"])
    print(f"  (+ the client signs one assertion per request: median {signing:.3f} ms, not in the server's req/s)")
    crypto = proof_crypto(max(ARGS.n, 50))
    print(
        "proof crypto alone (jwcrypto, no DB), median ms: "
        + "; ".join(f"{alg} sign {s:.3f} verify {v:.3f}" for alg, (s, v) in crypto.items())
        + "  (RS512: the PoC's and bootstrap_demo's algorithm)"
    )


def main():
    call_command("migrate", verbosity=0)
    bench = Bench()
    for _ in range(WARMUP):
        bench.round(capture=True)
    for _ in range(ARGS.n):
        bench.round()
    version = database_version()
    report(bench, version)


if __name__ == "__main__":
    run(main, cleanup, STARTED, "set-up, migrate, warm-up, timed rounds, crypto")
