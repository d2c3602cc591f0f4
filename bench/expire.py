"""Housekeeping at scale: housekeeping.expire_steps and purge_chains over N seeded steps.

    .venv/bin/python bench/expire.py [--sizes 100000 1000000] [--batch-size 1000]
        [--purge-batch-size 200] [--no-tracemalloc] [--database-url postgres://...|sqlite]

One throw-away database (PostgreSQL: ``chain_bench``, created and dropped through the
``postgres`` maintenance database of the server in --database-url, whose own database
is never touched; SQLite: a temp file), settings ``tests.settings``. For each N:

  seed    (setup) N/10 chains of 10 steps (root + 9 agent steps, fan-out 3, depths 0-2),
          each step with its own DOT Grant row, all due for expiry (``expires`` 1-25 h
          ago, ``ended_at`` NULL); COPY on PostgreSQL (bulk_create on SQLite), 5,000
          chains a transaction, then VACUUM ANALYZE as autovacuum would have done. Ids,
          paths, parents, roots and code digests are real; ``link_hash`` is a constant
          64-hex string (integrity is not measured: these chains fail verify_chain).
  expire  (measured) expire_steps(batch_size=--batch-size); checked: steps == grants
          == N, no due step and no DOT Grant row left.
  age     (setup) ended_at := now - 100 days on every step, VACUUM ANALYZE.
  purge   (measured) purge_chains(retention_days=90, batch_size=--purge-batch-size);
          checked: chains == N/10, steps == N, table empty.

Each measured call runs alone in a fresh child process (this script with --phase).
"peak RSS +X": VmHWM after the call minus VmRSS before it, the high-water mark reset
(/proc/self/clear_refs) just before the call, after Django set-up and one query.
"ru_maxrss +Y": growth of getrusage's high-water mark; Linux carries it over from the
forking parent, so it only shows a peak above the parent's RSS: a lower bound.
"tracemalloc peak": Python allocations during the call (not libpq's buffers). Tracing
every allocation costs: about 2x wall time at 100k steps here (the per-batch SQL is
cheap there), ~7% at 1M; time with --no-tracemalloc. "wall" is the call alone; load is
the 1-min load average before -> after. Informative: nothing asserts on time.
"""
# ruff: noqa: E402  (Django is configured before the imports that need it)

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import uuid
from datetime import timedelta
from itertools import islice
from pathlib import Path
from urllib.parse import urlsplit

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _setup import database_version, throwaway_database  # noqa: E402  (bench/, the script's own folder)

BENCH_DB, CHAIN, CHUNK_CHAINS, MiB = "chain_bench", 10, 5000, 2**20
PARENT = [None, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # each step's parent, by index within its chain
DEPTH = [0, 1, 1, 1, 2, 2, 2, 2, 2, 2]
CHILDREN = [PARENT.count(k) for k in range(CHAIN)]
LINK_HASH, CB = "0" * 64, "http://127.0.0.1/cb"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="steps (multiples of 10)")
parser.add_argument("--batch-size", type=int, default=1000, help="expire_steps: steps per batch")
parser.add_argument("--purge-batch-size", type=int, default=200, help="purge_chains: chains per batch")
parser.add_argument(
    "--database-url",
    default="postgres://postgres@127.0.0.1:5432/test",
    help="PostgreSQL server to use (a database chain_bench is created), or 'sqlite'",
)
parser.add_argument("--no-tracemalloc", action="store_true", help="measured phases without tracemalloc")
parser.add_argument("--phase", choices=("expire", "purge"), help=argparse.SUPPRESS)  # child process
parser.add_argument("--bench-url", help=argparse.SUPPRESS)
ARGS = parser.parse_args()
if any(n <= 0 or n % CHAIN for n in ARGS.sizes):
    parser.error(f"--sizes must be positive multiples of {CHAIN}")


if ARGS.phase:  # a child: the parent's throw-away database, nothing else
    if not (urlsplit(ARGS.bench_url).path == "/" + BENCH_DB or "/chain_bench_" in ARGS.bench_url):
        sys.exit(f"refusing to run a phase on {ARGS.bench_url}")
    os.environ["DATABASE_URL"], cleanup = ARGS.bench_url, (lambda: None)
else:
    # idp_project.settings reads DATABASE_URL
    os.environ["DATABASE_URL"], cleanup = throwaway_database(ARGS.database_url, BENCH_DB)
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
from django.conf import settings

settings.DEBUG = False  # no connection.queries growing in the measured process
django.setup()

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from oauth2_provider.models import get_application_model, get_grant_model

from chain_grant.core import codes
from chain_grant.core import retention as housekeeping
from chain_grant.models import ChainedGrant

Grant = get_grant_model()


def phase():
    """Child process: run one housekeeping call, print its figures as one JSON line."""
    ChainedGrant.objects.exists()  # connected, ORM warmed up
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS (Linux >= 4.0)
    vm0, ru0, load0 = vm("VmRSS"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, os.getloadavg()[0]
    if not ARGS.no_tracemalloc:
        tracemalloc.start()
    start = time.perf_counter()
    if ARGS.phase == "expire":
        result = housekeeping.expire_steps(batch_size=ARGS.batch_size)
    else:
        result = housekeeping.purge_chains(retention_days=90, batch_size=ARGS.purge_batch_size)
    wall = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else None
    ru1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "wall": wall,
                **vars(result),
                "vm0": vm0,
                "hwm": vm("VmHWM"),
                "ru": (ru1 - ru0) * 1024,
                "tm_peak": peak,
                "load": [load0, os.getloadavg()[0]],
            }
        )
    )


def vm(key):  # a size from /proc/self/status, in bytes
    rows = [r for r in Path("/proc/self/status").read_text().splitlines() if r.startswith(key + ":")]
    return int(rows[0].split()[1]) * 1024 if rows else 0


def run_child(name):
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        name,
        "--bench-url",
        os.environ["DATABASE_URL"],
        "--batch-size",
        str(ARGS.batch_size),
        "--purge-batch-size",
        str(ARGS.purge_batch_size),
    ]
    out = subprocess.run(
        cmd + ["--no-tracemalloc"] * ARGS.no_tracemalloc, check=True, text=True, stdout=subprocess.PIPE
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def rows(n, app_id, user_id, first_grant_id):
    """(grant, step) dicts by attname, chain after chain, root first."""
    now = timezone.now()
    for c in range(n // CHAIN):
        expires = now - timedelta(hours=1, seconds=c % 86400)
        ids, paths = [uuid.uuid4() for _ in range(CHAIN)], []
        for k, p in enumerate(PARENT):
            paths.append((paths[p] if p is not None else "") + ids[k].hex + "/")
            code, gid = f"bench-{n}-{c}-{k}", first_grant_id + c * CHAIN + k
            yield (
                {
                    "id": gid,
                    "user_id": user_id,
                    "code": codes.code_digest(code),  # as DOT keeps codes with chain_grant
                    "application_id": app_id,
                    "expires": expires,
                    "redirect_uri": CB,
                    "scope": "read",
                    "created": now,
                    "updated": now,
                    "code_challenge": "",
                    "code_challenge_method": "",
                    "nonce": "",
                    "claims": "",
                    "resource": [],
                },
                {
                    "id": ids[k],
                    "parent_id": None if p is None else ids[p],
                    "root_id": ids[0],
                    "depth": DEPTH[k],
                    "path": paths[k],
                    "code_digest": codes.code_digest(code),
                    "expires": expires,
                    "redirect_uri": CB,
                    "kind": "agent" if k else "user",
                    "application_id": app_id,
                    "user_id": user_id,
                    "agent_id": None,
                    "subject": f"agent{k}" if k else str(user_id),
                    "scope": "read",
                    "requested_scope": "read",
                    "proof_jti": "",
                    "proof_claims": {},
                    "proof_digest": "",
                    "message_digest": "",
                    "created": expires - timedelta(minutes=10),
                    "grant_id": gid,
                    "exchanged_at": None,
                    "access_token_id": None,
                    "token_family": None,
                    "revoked_at": None,
                    "revoked_reason": "",
                    "expired_at": None,
                    "ended_at": None,
                    "children_count": CHILDREN[k],
                    "link_hash": LINK_HASH,
                },
            )


def insert(model, dicts):
    fields = model._meta.concrete_fields
    unknown = set(dicts[0]) - {f.attname for f in fields}
    assert not unknown, f"{model.__name__}: no fields {sorted(unknown)}, update rows()"
    defaults = {f.attname: f.get_default() for f in fields if f.attname not in dicts[0]}  # fields rows() leaves out
    dicts = [{**defaults, **d} for d in dicts]
    if connection.vendor != "postgresql":
        return model.objects.bulk_create([model(**d) for d in dicts], batch_size=5000)
    cols = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {model._meta.db_table} ({cols}) FROM STDIN") as cp:
        for d in dicts:
            cp.write_row([json.dumps(v) if isinstance(v, (dict, list)) else v for v in (d[f.attname] for f in fields)])


def vacuum():
    verb = "VACUUM ANALYZE " if connection.vendor == "postgresql" else "ANALYZE "
    with connection.cursor() as cursor:
        for model in (ChainedGrant, Grant):
            cursor.execute(verb + model._meta.db_table)


def seed(n, app, user):
    first = (Grant.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    pairs = rows(n, app.pk, user.pk, first)
    while chunk := list(islice(pairs, CHUNK_CHAINS * CHAIN)):
        with transaction.atomic():
            insert(Grant, [g for g, _ in chunk])
            insert(ChainedGrant, [s for _, s in chunk])
    if connection.vendor == "postgresql":  # explicit ids were given: move the sequence past them
        with connection.cursor() as cursor:
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [Grant._meta.db_table, first + n])
    vacuum()


def check(ok, what):
    if not ok:
        raise RuntimeError(f"check failed: {what}")


def line(n, name, r, rates):
    tm, per_batch = "off" if r["tm_peak"] is None else f"{r['tm_peak'] / MiB:.1f} MiB", r["wall"] / max(r["batches"], 1)
    return (
        f"N={n:,} {name}: {r['wall']:.1f} s wall, {rates}, {r['batches']:,} batches "
        f"({1000 * per_batch:.0f} ms/batch), peak RSS +{(r['hwm'] - r['vm0']) / MiB:.1f} MiB "
        f"(child {r['hwm'] / MiB:.0f} MiB), ru_maxrss +{r['ru'] / MiB:.1f} MiB, tracemalloc peak {tm}, "
        f"load {r['load'][0]:.2f}->{r['load'][1]:.2f}"
    )


def main():
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("alice", "alice@example.com", "alice-pw")
    App = get_application_model()
    app = App.objects.create(
        client_id="bench",
        client_secret="s3cret",
        client_type=App.CLIENT_CONFIDENTIAL,
        authorization_grant_type=App.GRANT_AUTHORIZATION_CODE,
        redirect_uris=CB,
        user=user,
    )
    version = database_version()
    print(
        f"chain_grant housekeeping benchmark: {connection.vendor} {version}, expire batch {ARGS.batch_size} "
        f"steps, purge batch {ARGS.purge_batch_size} chains, chains of {CHAIN} steps (fan-out 3), "
        f"tracemalloc {'off' if ARGS.no_tracemalloc else 'on'}, {os.cpu_count()} CPUs",
        flush=True,
    )
    summary = []
    for n in ARGS.sizes:
        start = time.perf_counter()
        seed(n, app, user)
        seeded = time.perf_counter() - start
        check(ChainedGrant.objects.due_to_end().count() == n and Grant.objects.count() == n, "seeded rows")
        print(
            f"N={n:,} seed (setup): {seeded:.1f} s, {n // CHAIN:,} chains + {n:,} DOT grants "
            f"({'COPY' if connection.vendor == 'postgresql' else 'bulk_create'}, then vacuum/analyze)",
            flush=True,
        )

        ex = run_child("expire")
        check(ex["steps"] == n and ex["grants"] == n, f"expire returned {ex}")
        check(not ChainedGrant.objects.due_to_end().exists() and not Grant.objects.exists(), "nothing left to expire")
        print(line(n, "expire", ex, f"{n / ex['wall']:,.0f} steps/s"), flush=True)

        start = time.perf_counter()
        ChainedGrant.objects.update(ended_at=timezone.now() - timedelta(days=100))
        vacuum()
        aged = time.perf_counter() - start
        print(f"N={n:,} set ended_at 100 days ago (setup): {aged:.1f} s", flush=True)

        pu = run_child("purge")
        check(pu["chains"] == n // CHAIN and pu["steps"] == n, f"purge returned {pu}")
        check(not ChainedGrant.objects.exists(), "table empty after purge")
        print(
            line(n, "purge", pu, f"{pu['chains'] / pu['wall']:,.0f} chains/s, {n / pu['wall']:,.0f} steps/s"),
            flush=True,
        )
        summary.append(
            f"  N={n:>9,}: seed {seeded:7.1f} s | expire {ex['wall']:7.1f} s "
            f"({n / ex['wall']:>7,.0f} steps/s, +{(ex['hwm'] - ex['vm0']) / MiB:.1f} MiB) | "
            f"age {aged:6.1f} s | purge {pu['wall']:7.1f} s ({n / pu['wall']:>7,.0f} steps/s, "
            f"+{(pu['hwm'] - pu['vm0']) / MiB:.1f} MiB) | counts OK, table empty"
        )
    print("summary:", *summary, sep="\n")


if __name__ == "__main__":
    try:
        phase() if ARGS.phase else main()
    finally:
        connection.close()
        cleanup()
    if not ARGS.phase:
        print(f"total runtime {time.perf_counter() - STARTED:.1f} s (create db, migrate, seed, phases, drop db)")
