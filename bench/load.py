"""Over real HTTP: a stock DOT server and the chain server, side by side, under load.

    .venv/bin/python bench/load.py [--n 400] [--workers 2] [--concurrency 8] [--depth 1000]
                                   [--database-url postgres://...] [--force]

One command, one block of cells run back to back. It creates a throw-away database (a
temp SQLite file, or a PostgreSQL database ``chain_load`` next to the one --database-url
names, which is never touched; both dropped at the end), migrates it, and starts two
gunicorn servers (sync workers, --workers each) on that same database:

  stock  DOT 3.4.1 as it ships: oauthlib's Server, DOT's validator, backend and views,
         Django's own middleware, no chain_grant (bench/_load_stock_settings.py)
  chain  idp_project, chain_grant plugged in as the README says (bench/_load_chain_settings.py)

Both use the same plain client secret (hashed with MD5: PBKDF2 would cost ~190 ms a request
and hide the rest) and keep database connections for DB_CONN_MAX_AGE (default here 60 s,
the production profile's). Codes, parent steps, PKCE pairs and proofs are made before a
cell (in this process, untimed); every body is used once. An aiohttp closed-loop driver
keeps --concurrency requests in flight; the first 2 x concurrency requests of a cell warm
up and are not counted. After each cell the rows written are checked against the
successes (access tokens for an exchange, steps for a hop, none for introspection).

The machine's load is read before the set-up (os.getloadavg, and the CPUs' busy share
over 2 s from /proc/stat, which does not remember a run that just ended): over half
the CPUs busy, the script refuses to run (--force runs anyway, every figure marked BUSY). The driver
shares the cores with the servers, so absolute figures are lower than on a dedicated
server: read the ratios, which compare cells of the same block.
"""
# ruff: noqa: E402  (Django is configured before the imports that need it)

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

STARTED = time.perf_counter()
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]
from _setup import throwaway_database  # noqa: E402  (bench/, the script's own folder)

REDIRECT_URI, SECRET, SCOPE = "http://127.0.0.1:8765/oauth-callback", "s3cret-for-bench", "openid read write"
STOCK_PORT, CHAIN_PORT = 18511, 18512
LOAD_DB = "chain_load"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--n", type=int, default=400, help="timed requests per cell (default 400)")
parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per server (default 2)")
parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
parser.add_argument("--depth", type=int, default=1000, help="depth of the deep parents (default 1000)")
parser.add_argument("--database-url", help="postgres://... (a database chain_load is created); default SQLite")
parser.add_argument("--conn-max-age", default="60", help="DB_CONN_MAX_AGE of both servers (default 60)")
parser.add_argument("--force", action="store_true", help="run on a busy machine, every figure marked BUSY")
ARGS = parser.parse_args()

CORES = os.cpu_count() or 1


def cpu_busy(seconds: float = 2.0) -> float | None:
    """The share of all CPUs busy over the next ``seconds`` (Linux's /proc/stat), or None.
    Unlike the load average, it does not remember a benchmark that just ended."""

    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    try:
        (total0, idle0), _ = sample(), time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


LOAD_BEFORE, BUSY_BEFORE = os.getloadavg(), cpu_busy()
BUSY = BUSY_BEFORE > 0.5 if BUSY_BEFORE is not None else LOAD_BEFORE[0] > CORES / 2
if BUSY and not ARGS.force:
    sys.exit(
        f"refusing to measure: CPUs {BUSY_BEFORE or 0:.0%} busy, load average {LOAD_BEFORE[0]:.2f} on {CORES} "
        "cores (--force to run anyway)"
    )

database_url, cleanup = throwaway_database(ARGS.database_url, LOAD_DB)
var_dir = tempfile.mkdtemp(prefix="chain_load_var_")  # the servers' generated secret and OIDC keys
ENV = {
    **os.environ,
    "DATABASE_URL": database_url,
    "IDP_VAR_DIR": var_dir,
    "OIDC_ISSUER": f"http://127.0.0.1:{CHAIN_PORT}/oauth",  # the proofs' aud, in-process and over HTTP
    "CHAIN_MAX_DEPTH": str(ARGS.depth + 10),
    "CHAIN_MAX_CHILDREN": str(10 * ARGS.n + 100),  # the deep cell's parents share one grandparent
    "DB_CONN_MAX_AGE": ARGS.conn_max_age,
    "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO)]),
}
os.environ.update(ENV)
os.environ["DJANGO_SETTINGS_MODULE"] = "_load_chain_settings"
import django

django.setup()

import aiohttp
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model, get_grant_model
from oauthlib.common import generate_token

from chain_grant.client import generate_key, pkce_pair, sign_proof
from chain_grant.core import agents
from chain_grant.core.codes import code_digest
from chain_grant.models import ChainClient, ChainedGrant

ISSUER = os.environ["OIDC_ISSUER"]
BASIC = "Basic " + base64.b64encode(f"chain-client:{SECRET}".encode()).decode()


class World:
    """The clients, agents and keys both servers see, and the makers of single-use bodies."""

    def __init__(self):
        App = get_application_model()
        self.alice = get_user_model().objects.create_user("alice", "alice@example.com", "alice-pw")
        self.app = App.objects.create(
            client_id="chain-client",
            client_secret=SECRET,
            client_type=App.CLIENT_CONFIDENTIAL,
            user=self.alice,
            redirect_uris=REDIRECT_URI,
            algorithm=App.RS256_ALGORITHM,
            authorization_grant_type="authorization-code",
        )
        ChainClient.objects.create(application=self.app)
        self.keys = {name: generate_key("EC") for name in ("planner", "coder")}
        for name, key in self.keys.items():
            agents.register_agent(name, json.dumps(key.export_public(as_dict=True)), [self.app], SCOPE)
        self.client = Client()

    def dot_code(self, digest: bool) -> tuple[str, str]:
        """A live DOT code and its PKCE verifier, stored as stock DOT stores it (in clear) or,
        ``digest``, as the chain server's validator does (its SHA-256)."""
        verifier, challenge = pkce_pair()
        code = generate_token()
        get_grant_model().objects.create(
            application=self.app,
            user=self.alice,
            code=code_digest(code) if digest else code,
            expires=timezone.now() + timedelta(minutes=30),
            redirect_uri=REDIRECT_URI,
            scope=SCOPE,
            code_challenge=challenge,
            code_challenge_method="S256",
            claims="{}",
        )
        return code, verifier

    def hop_body(self, code: str, agent: str) -> tuple[dict, str]:
        verifier, challenge = pkce_pair()
        body = {
            "grant_type": "code_chain",
            "authorization_code": code,
            "id_token": sign_proof(self.keys[agent], sub=agent, aud=ISSUER, code=code, lifetime=300),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return body, verifier

    def hop(self, code: str, agent: str) -> str:
        """An untimed hop, in this process: the child's code."""
        body, _ = self.hop_body(code, agent)
        response = self.client.post("/oauth/token", body, HTTP_AUTHORIZATION=BASIC)
        if response.status_code != 200:
            raise RuntimeError(f"set-up hop: HTTP {response.status_code} {response.content[:300]!r}")
        return response.json()["authorization_code"]


def exchange_body(code: str, verifier: str) -> dict:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}


def percentile(ordered: list[float], p: int) -> float:
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]  # nearest rank


async def drive(port: int, path: str, bodies: list[dict], warm: int) -> dict:
    """POST every body once, --concurrency at a time (closed loop); the first ``warm`` are not
    timed. Returns req/s, latencies (ms), successes and the JSON answers in body order."""
    url, queue = f"http://127.0.0.1:{port}{path}", list(enumerate(bodies))[::-1]
    answers, latencies, failures = [None] * len(bodies), [], []
    timed_start = []

    async def worker(session):
        while queue:
            index, body = queue.pop()
            if index == warm:
                timed_start.append(time.perf_counter())
            start = time.perf_counter()
            async with session.post(url, data=body, headers={"Authorization": BASIC}) as response:
                payload = await response.json(content_type=None)
            if index >= warm:
                latencies.append((time.perf_counter() - start) * 1000)
            if response.status == 200:
                answers[index] = payload
            else:
                failures.append(f"HTTP {response.status} {str(payload)[:200]}")

    connector = aiohttp.TCPConnector(limit=ARGS.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(ARGS.concurrency)))
    elapsed = time.perf_counter() - timed_start[0]
    return {"rps": len(latencies) / elapsed, "ms": sorted(latencies), "answers": answers, "failures": failures}


class Cells:
    def __init__(self):
        self.results, self.warm = {}, 2 * ARGS.concurrency

    def run(self, key, title, port, path, bodies, table=None, check=None):
        """One cell; ``table`` (a model) must gain exactly one row per success."""
        before = table.objects.count() if table else 0
        result = asyncio.run(drive(port, path, bodies, self.warm))
        ok = [a for a in result["answers"] if a is not None]
        if result["failures"]:
            raise RuntimeError(f"{title}: {len(result['failures'])} failures, e.g. {result['failures'][0]}")
        if table and table.objects.count() - before != len(ok):
            raise RuntimeError(f"{title}: {table.objects.count() - before} rows written for {len(ok)} successes")
        if check:
            check(ok)
        result["title"] = title
        self.results[key] = result
        ms = result["ms"]
        print(
            f"{title:<58}{result['rps']:>8.1f}{percentile(ms, 50):>8.1f}{percentile(ms, 95):>8.1f}"
            f"{percentile(ms, 99):>8.1f}" + ("  BUSY" if BUSY else ""),
            flush=True,
        )
        return ok


def active(answers):
    if not all(a.get("active") for a in answers):
        raise RuntimeError("an introspected token is not active")


def chained(answers):
    active(answers)
    if not all(a.get("act", {}).get("sub") == "coder" for a in answers):
        raise RuntimeError(f"a chained token without its act: {answers[0]}")


def serve(settings_module: str, app: str, port: int) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        *("--workers", str(ARGS.workers), "--worker-class", "sync", "--bind", f"127.0.0.1:{port}"),
        *("--chdir", str(REPO), "--log-level", "warning", "--timeout", "120"),
        *("--env", f"DJANGO_SETTINGS_MODULE={settings_module}", app),
    ]
    return subprocess.Popen(command, env=ENV)


def wait_up(port: int, path: str) -> None:
    import urllib.error
    import urllib.request

    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no server on port {port}")


def main():
    call_command("migrate", verbosity=0)
    world, n, cells = World(), ARGS.n, Cells()
    total = n + cells.warm
    print(f"set-up: {total} bodies per cell, a chain of depth {ARGS.depth} ...", flush=True)
    prepared = time.perf_counter()
    stock_codes = [world.dot_code(digest=False) for _ in range(total)]
    chain_codes = [world.dot_code(digest=True) for _ in range(total)]
    depth1 = [world.hop(world.dot_code(digest=True)[0], "planner") for _ in range(total)]
    deep = world.hop(world.dot_code(digest=True)[0], "planner")
    for _ in range(ARGS.depth - 2):
        deep = world.hop(deep, "coder" if _ % 2 else "planner")
    deep_leaves = [world.hop(deep, "coder") for _ in range(total)]  # at --depth, each a hop's parent
    hops = [world.hop_body(code, "coder") for code in depth1]
    deep_hops = [world.hop_body(code, "planner")[0] for code in deep_leaves]
    steps = ChainedGrant.objects.count()
    print(f"set-up done in {time.perf_counter() - prepared:.1f} s ({steps} steps in the table)", flush=True)
    connection.close()

    servers = [
        serve("_load_stock_settings", "django.core.wsgi:get_wsgi_application()", STOCK_PORT),
        serve("_load_chain_settings", "idp_project.wsgi:application", CHAIN_PORT),
    ]
    try:
        for port in (STOCK_PORT, CHAIN_PORT):
            wait_up(port, "/oauth/.well-known/openid-configuration")
        block(world, cells, stock_codes, chain_codes, hops, deep_hops)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    report(cells, steps)


def block(world, cells, stock_codes, chain_codes, hops, deep_hops):
    Token = get_access_token_model()
    print(f"{'cell (' + str(ARGS.n) + ' timed requests each)':<58}{'req/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}")
    stock = cells.run(
        "ex-stock", "stock DOT: authorization_code exchange", STOCK_PORT, "/oauth/token/",
        [exchange_body(*c) for c in stock_codes], Token,
    )  # fmt: skip
    plain = cells.run(
        "ex-chain", "chain server: authorization_code, plain DOT code", CHAIN_PORT, "/oauth/token/",
        [exchange_body(*c) for c in chain_codes], Token,
    )  # fmt: skip
    children = cells.run("hop-1", "chain server: code_chain hop from depth 1", CHAIN_PORT, "/oauth/token",
        [body for body, _ in hops], ChainedGrant)  # fmt: skip
    codes = [(a["authorization_code"], verifier) for a, (_, verifier) in zip(children, hops, strict=True)]
    tokens = cells.run(
        "ex-chained", "chain server: authorization_code, chained code (depth 2)", CHAIN_PORT, "/oauth/token/",
        [exchange_body(*c) for c in codes], Token,
    )  # fmt: skip
    cells.run("hop-deep", f"chain server: code_chain hop from depth {ARGS.depth}", CHAIN_PORT, "/oauth/token",
        deep_hops, ChainedGrant)  # fmt: skip
    plain_tokens = [{"token": a["access_token"]} for a in stock]
    chain_plain_tokens = [{"token": a["access_token"]} for a in plain]
    chained_tokens = [{"token": a["access_token"]} for a in tokens]
    cells.run("in-stock", "stock DOT: introspect plain token", STOCK_PORT, "/oauth/introspect/",
        plain_tokens, check=active)  # fmt: skip
    cells.run("in-chain", "chain server: introspect plain token", CHAIN_PORT, "/oauth/introspect/",
        chain_plain_tokens, check=active)  # fmt: skip
    cells.run("in-chained", "chain server: introspect chained token (act x2)", CHAIN_PORT, "/oauth/introspect/",
        chained_tokens, check=chained)  # fmt: skip
    cells.run("in-stock-chained", "stock DOT: introspect the chained tokens", STOCK_PORT, "/oauth/introspect/",
        chained_tokens, check=active)  # fmt: skip


RATIOS = [
    ("ex-chain", "ex-stock", "DOT exchange, chain server / stock", 0.97),
    ("hop-1", "ex-stock", "hop / stock DOT exchange", 1.0),
    ("hop-1", "ex-chain", "hop / DOT exchange on the chain server", 1.0),
    ("ex-chained", "ex-stock", "chained-code exchange / stock DOT exchange", None),
    ("in-chain", "in-stock", "introspection of a plain token, chain / stock", 0.97),
    ("in-chained", "in-chain", "introspection, chained / plain token (chain server)", 0.9),
    ("in-stock-chained", "in-stock", "stock introspection, chained / plain token", None),
    ("hop-deep", "hop-1", f"hop from depth {ARGS.depth} / from depth 1 (throughput)", 1 / 1.1),
]


def report(cells, steps):
    r = {key: result["rps"] for key, result in cells.results.items()}
    print("ratios of throughput (req/s over req/s), against the issue's targets:")
    for num, den, title, target in RATIOS:
        verdict = "" if target is None else ("meets" if r[num] / r[den] >= target else "BELOW") + f" x{target:.2f}"
        print(f"  {title:<58} x{r[num] / r[den]:>5.2f}  {verdict}" + ("  BUSY" if BUSY else ""))
    used = min(ARGS.workers, CORES)
    print(f"  hops/s per core: {r['hop-1'] / used:.1f} ({ARGS.workers} workers on {CORES} cores, driver included)")
    load_after = os.getloadavg()
    vendor = connection.vendor
    print(
        f"database {vendor}, {steps} steps before the block; gunicorn {ARGS.workers} sync workers per server, "
        f"aiohttp concurrency {ARGS.concurrency}, DB_CONN_MAX_AGE={ARGS.conn_max_age}; before the run: CPUs "
        f"{BUSY_BEFORE or 0:.0%} busy, load average {LOAD_BEFORE[0]:.2f} (after {load_after[0]:.2f}, ours "
        f"included) on {CORES} cores" + ("  ** BUSY MACHINE: figures are not a measurement **" if BUSY else "")
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        connection.close()
        cleanup()
        shutil.rmtree(var_dir, ignore_errors=True)
        print(f"total runtime {time.perf_counter() - STARTED:.1f} s")
