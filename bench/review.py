"""What reviewing a chain costs: the admin chain page, the REST API's tree, verify and
evidence endpoints, the revoke confirmation page and revoke_subtree, at growing chain sizes.

    .venv/bin/python bench/review.py [--sizes 10 1000 10000] [--repeat 5]
        [--database-url postgres://postgres@127.0.0.1:5432/test]

One run, one throw-away database (a temp SQLite file, or a PostgreSQL database
``chain_review_bench`` created next to the one in --database-url, which is never
touched; both are deleted at the end; not ``chain_bench``, so bench/hops.py or
bench/expire.py may run at the same time), settings ``tests.settings``, migrated once.
Requests go through Django's test Client (in-process WSGI, full middleware, no
network, one thread) as a staff superuser with a session (admin) or a ``chains:read``
bearer token (API). For each size N:

  build  (setup) tests.factories.build_chain(N): a root from a real DOT grant plus N-1
         agent steps, fan-out 3, each with its DOT Grant row and a real link_hash (one
         INSERT per step, as real hops do). A second chain of N has, in addition, every
         step exchanged with its own access + refresh token (bulk-created), for the
         "with tokens" revoke.
  read   (measured) GET the admin chain page, GET /api/chains/<id>/ (tree),
         .../verify/ and .../evidence/, and the admin revoke confirmation page for the
         root (which lists all N steps): one untimed warm-up, then --repeat timed calls
         (N >= 10,000: at most 3); median and min ms, SQL queries per request
         (CaptureQueriesContext, on the warm-up call) and response size.
  revoke (measured, once: it changes the chain) lifecycle.revoke_subtree(root) on the
         first chain (no tokens) and on the second (N tokens); ms and SQL queries.

Timings are informative: nothing asserts on time. Each response is checked (HTTP 200,
N steps, integrity ok) and each revoke's count (== N), so a broken run says so.
"""
# ruff: noqa: E402  (Django is configured before the imports that need it)

import argparse
import hashlib
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _setup import database_version, run, setup_django  # noqa: E402  (bench/, the script's own folder)

BENCH_DB = "chain_review_bench"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1_000, 10_000], help="steps per chain")
parser.add_argument("--repeat", type=int, default=5, help="timed calls per read (at most 3 from 10,000 steps)")
parser.add_argument("--database-url", help="postgres://... (a database chain_review_bench is created); default SQLite")
ARGS = parser.parse_args()
if any(n < 1 for n in ARGS.sizes) or ARGS.repeat < 1:
    parser.error("sizes and --repeat must be positive")


cleanup = setup_django(ARGS.database_url, BENCH_DB)

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_refresh_token_model,
    set_token_value,
)

from chain_grant.core import lifecycle
from chain_grant.models import ChainClient, ChainedGrant
from tests.factories import build_chain

AccessToken, RefreshToken = get_access_token_model(), get_refresh_token_model()


def fail(message):
    raise RuntimeError(message)


class Bench:
    def __init__(self):
        User = get_user_model()
        self.staff = User.objects.create_superuser("auditor", "auditor@example.com", "pw")
        self.alice = User.objects.create_user("alice", "alice@example.com", "pw")
        App = get_application_model()
        self.app = App.objects.create(
            client_id="chain-client",
            client_secret="s3cret",
            client_type=App.CLIENT_CONFIDENTIAL,
            authorization_grant_type=App.GRANT_AUTHORIZATION_CODE,
            redirect_uris="http://127.0.0.1/cb",
            algorithm=App.RS256_ALGORITHM,
            user=self.staff,
        )
        ChainClient.objects.create(application=self.app)
        self.admin = Client()
        self.admin.force_login(self.staff)
        raw = uuid.uuid4().hex
        token = AccessToken(
            user=self.staff, application=self.app, scope="chains:read", expires=timezone.now() + timedelta(days=1)
        )
        set_token_value(token, raw)
        token.save()
        self.api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    def build(self, n, prefix, tokens=False):
        start = time.perf_counter()
        root = build_chain(self.app, self.alice, n, code_prefix=prefix)
        if tokens:
            now = timezone.now()
            steps = list(ChainedGrant.objects.chain(root.pk))
            made = AccessToken.objects.bulk_create(
                AccessToken(
                    user=self.alice,
                    application=self.app,
                    token="",
                    scope="read",
                    expires=now + timedelta(hours=1),
                    token_checksum=hashlib.sha256(f"{prefix}a{i}".encode()).hexdigest(),
                )
                for i in range(n)
            )
            families = [uuid.uuid4() for _ in steps]
            RefreshToken.objects.bulk_create(
                RefreshToken(
                    user=self.alice,
                    application=self.app,
                    token="",
                    access_token=t,
                    token_family=f,
                    token_checksum=hashlib.sha256(f"{prefix}r{i}".encode()).hexdigest(),
                )
                for i, (t, f) in enumerate(zip(made, families, strict=True))
            )
            for step, t, f in zip(steps, made, families, strict=True):
                step.access_token_id, step.token_family, step.exchanged_at = t.pk, f, now
            ChainedGrant.objects.bulk_update(
                steps, ["access_token_id", "token_family", "exchanged_at"], batch_size=1000
            )
        return root, time.perf_counter() - start

    def read(self, client, url, n, check):
        repeat = min(ARGS.repeat, 3) if n >= 10_000 else ARGS.repeat
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        sql = len(ctx)  # now: the next request clears connection.queries
        if response.status_code != 200:
            fail(f"{url}: HTTP {response.status_code} {response.content[:300]!r}")
        check(response)
        ms = []
        for _ in range(repeat):
            start = time.perf_counter()
            client.get(url)
            ms.append((time.perf_counter() - start) * 1000)
        return {"median": statistics.median(ms), "min": min(ms), "sql": sql, "kib": len(response.content) / 1024}

    def revoke(self, root, n):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            count = lifecycle.revoke_subtree(root, "bench")
            wall = (time.perf_counter() - start) * 1000
        sql = len(ctx)
        if count != n:
            fail(f"revoke_subtree returned {count}, expected {n}")
        return {"median": wall, "min": wall, "sql": sql, "kib": 0.0}


def tree_ok(n):
    def check(response):
        body = response.json()
        if len(body["steps"]) != n or not body["verification"]["ok"]:
            fail(f"tree: {len(body['steps'])} steps, verification {body['verification']}")

    return check


def page_ok(n):
    def check(response):
        html = response.content.decode()
        if html.count('class="chain-step') != n or "✓" not in html:
            fail("chain page: wrong number of steps or integrity not verified")

    return check


def confirm_ok(n):
    def check(response):
        if response.content.decode().count("<li style=") != n:
            fail("revoke confirmation: wrong number of listed steps")

    return check


def verify_ok(n):
    def check(response):
        if response.json() != {"ok": True, "checked": n, "first_bad_step": None}:
            fail(f"verify: {response.json()}")

    return check


def evidence_ok(n):
    def check(response):
        body = response.json()
        if len(body["evidence"]["steps"]) != n or body["jws"].count(".") != 2:
            fail("evidence: wrong bundle")

    return check


def main():
    call_command("migrate", verbosity=0)
    version = database_version()
    bench = Bench()
    print(
        f"chain_grant review benchmark: sizes {', '.join(f'{n:,}' for n in ARGS.sizes)} steps, "
        f"repeat {ARGS.repeat}, database={connection.vendor} {version}"
    )
    print(
        "Django test Client (in-process WSGI, full middleware, no network); single thread; times in ms "
        "(median / min of the timed calls); SQL = queries per request (per call for revoke_subtree)"
    )
    print(f"{'N':>7}  {'operation':<44}{'median':>10}{'min':>10}{'SQL':>6}{'KiB':>9}")
    for n in ARGS.sizes:
        root, built = bench.build(n, f"b{n}-")
        chain_id = root.pk
        rows = [
            (
                "admin chain page",
                bench.read(bench.admin, reverse("admin:chain_grant_chain_tree", args=[chain_id]), n, page_ok(n)),
            ),
            ("API tree  GET /api/chains/<id>/", bench.read(bench.api, f"/api/chains/{chain_id}/", n, tree_ok(n))),
            ("API verify", bench.read(bench.api, f"/api/chains/{chain_id}/verify/", n, verify_ok(n))),
            (
                "API evidence (JSON + RS256 JWS)",
                bench.read(bench.api, f"/api/chains/{chain_id}/evidence/", n, evidence_ok(n)),
            ),
            (
                "admin revoke confirmation (lists N)",
                bench.read(bench.admin, reverse("admin:chain_grant_step_revoke", args=[chain_id]), n, confirm_ok(n)),
            ),
            ("revoke_subtree(root), no tokens", bench.revoke(root, n)),
        ]
        with_tokens, built_t = bench.build(n, f"t{n}-", tokens=True)
        rows.append((f"revoke_subtree(root), {n:,} tokens issued", bench.revoke(with_tokens, n)))
        if AccessToken.objects.filter(user=bench.alice).exists():
            fail("tokens left after revoke_subtree")
        for title, r in rows:
            print(
                f"{n:>7,}  {title:<44}{r['median']:>10.1f}{r['min']:>10.1f}{r['sql']:>6}"
                f"{r['kib'] if r['kib'] else '':>9{'.1f' if r['kib'] else ''}}",
                flush=True,
            )
        print(f"{n:>7,}  (setup: build_chain {built:.1f} s, with tokens {built_t:.1f} s)", flush=True)


if __name__ == "__main__":
    run(main, cleanup, STARTED, "create db, migrate, build, measure, drop db")
