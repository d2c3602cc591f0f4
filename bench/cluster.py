"""Hops per second through ONE gunicorn instance (deploy/gunicorn.conf.py) with N workers,
on this machine, against PostgreSQL: the figures behind docs/deploy.md's sizing notes.

    .venv/bin/python bench/cluster.py [--workers 1,2,3,4,6] [--clients 8] [--seconds 15]
                                      [--database-url postgres://postgres@127.0.0.1:5432/test]

Setup (untimed): scripts/cluster.py's Cluster with one web instance and no worker/beat,
on a throw-away database ``chain_cluster_<pid>`` (dropped at the end); bootstrap_demo's
client ``chain-demo`` (client secret hashed with Django's PBKDF2: DOT's default) and a
second client ``chain-bench-plain`` with ``hash_client_secret=False`` (same agents), to
separate client authentication from chain_grant's own work.

For each client and each worker count: gunicorn restarted with N workers; root codes
minted first through the authorize endpoint (alice, consent), untimed; then ``--clients``
threads (urllib, one connection per request, like an agent) hop for ``--seconds``: each
takes a root, advances a linear chain to MAX_DEPTH (16), three chains per root (fan-out
3). Every hop signs a fresh RS512 proof (the planner's key) in the client, outside the
timed request. Printed: hops/s, latency p50/p95, errors, the workers' RSS. The client
process shares the machine's CPUs with the server (it is light next to a hop).
"""
# ruff: noqa: E402  (the harness is loaded from scripts/ before use)

import argparse
import importlib.util
import json
import os
import secrets
import statistics
import sys
import threading
import time
import urllib.error
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chain_grant.client import ChainClientError, code_chain, load_private_key, pkce_pair, sign_proof


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cluster_mod = load("bench_cluster_harness", REPO / "scripts" / "cluster.py")
agent_chat = load("bench_agent_chat", REPO / "scripts" / "agent_chat.py")

PLAIN_CLIENT = """
import json, sys
import django
django.setup()
from oauth2_provider.models import get_application_model
from chain_grant.models import Agent, ChainClient
Application = get_application_model()
demo = Application.objects.get(client_id="chain-demo")
app = Application.objects.create(
    name="bench, unhashed secret", client_id="chain-bench-plain", client_secret=sys.argv[1], hash_client_secret=False,
    client_type=demo.client_type, authorization_grant_type=demo.authorization_grant_type,
    redirect_uris=demo.redirect_uris, algorithm=demo.algorithm, user=demo.user)
ChainClient.objects.create(application=app)
Agent.objects.get(identifier="planner").applications.add(app)
print(json.dumps({"ok": True}))
"""


def pbkdf2_ms() -> float:
    """One client-secret check with Django's default hasher, in this process (the cost a
    hop pays in the server when the secret is hashed)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        hasher.encode("a-client-secret", "saltsaltsalt")
        timings.append(time.perf_counter() - started)
    return 1000 * min(timings)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Bench:
    def __init__(self, cluster, args):
        self.cluster, self.args = cluster, args
        self.creds = json.loads((cluster.var_dir / "demo_credentials.json").read_text())
        self.key = load_private_key(str(cluster.var_dir / "agents" / "planner.json"))
        self.base = cluster.urls[0]

    def mint_roots(self, client_id: str, count: int) -> list[str]:
        browser = agent_chat.Browser(self.base, login=("alice", self.creds["alice_password"]))
        roots = []
        for _ in range(count):
            _, challenge = pkce_pair()
            params = {
                "client_id": client_id,
                "redirect_uri": agent_chat.REDIRECT_URI,
                "response_type": "code",
                "scope": "openid read write",
                "state": secrets.token_urlsafe(8),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
            url = f"{self.base}/oauth/authorize/?{urllib.parse.urlencode(params)}"
            roots.append(browser.authorize(url, params["state"], "a root code"))
        return roots

    def run(self, client_id: str, secret: str, workers: int) -> dict:
        cluster = self.cluster
        cluster.webs[0].stop()
        cluster.start_web(0, workers=workers)
        cluster.wait_ready(cluster.webs[0])
        expected = {"pbkdf2": 8.0, "plain": 80.0}[self.label(client_id)] * min(workers, 2)
        roots = self.mint_roots(client_id, int(expected * self.args.seconds / 48) + self.args.clients + 2)
        lock, latencies, errors = threading.Lock(), [], []
        stop = time.monotonic() + self.args.seconds
        token_url = self.base + "/oauth/token/"

        def client():
            while time.monotonic() < stop:
                with lock:
                    if not roots:
                        return
                    root = roots.pop()
                for _branch in range(3):  # MAX_CHILDREN
                    code = root
                    for _depth in range(16):  # MAX_DEPTH
                        if time.monotonic() >= stop:
                            return
                        proof = sign_proof(self.key, sub="planner", aud=cluster.issuer, code=code)
                        _, challenge = pkce_pair()
                        started = time.perf_counter()
                        try:
                            body = code_chain(token_url, client_id, secret, code, proof, code_challenge=challenge)
                        except (ChainClientError, urllib.error.URLError, OSError) as exc:
                            with lock:
                                errors.append(type(exc).__name__ + ":" + getattr(exc, "error", ""))
                            break
                        elapsed = time.perf_counter() - started
                        with lock:
                            latencies.append(elapsed)
                        code = body["authorization_code"]

        threads = [threading.Thread(target=client) for _ in range(self.args.clients)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        duration = time.monotonic() - began
        master = cluster.webs[0].popen.pid
        rss = [rss_mib(pid) for pid in children(master)]
        latencies.sort()
        return {
            "client": self.label(client_id),
            "workers": workers,
            "hops": len(latencies),
            "seconds": round(duration, 1),
            "hops_per_s": round(len(latencies) / duration, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
            "errors": len(errors),
            "error_kinds": sorted(set(errors))[:3],
            "roots_left": len(roots),
            "worker_rss_mib": round(max(rss), 1) if rss else None,
            "master_rss_mib": round(rss_mib(master), 1),
        }

    @staticmethod
    def label(client_id: str) -> str:
        return "plain" if client_id == "chain-bench-plain" else "pbkdf2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,3,4,6", help="gunicorn worker counts to measure")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--seconds", type=float, default=15, help="measured seconds per configuration")
    parser.add_argument("--clients-to-run", default="pbkdf2,plain", help="pbkdf2 (DOT default), plain (unhashed)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or cluster_mod.DEFAULT_DATABASE_URL)
    args = parser.parse_args()
    started = time.monotonic()
    cluster = cluster_mod.Cluster(args.database_url, web=1, housekeeping=False, code_expire_seconds=600, log_format="")
    plain_secret = secrets.token_urlsafe(24)
    results = []
    with cluster:
        cluster.manage("bootstrap_demo", "--secret")  # chain-demo: its (PBKDF2-hashed) secret accepted, not key-only
        cluster.python(PLAIN_CLIENT, plain_secret)
        bench = Bench(cluster, args)
        print(
            f"==> one gunicorn instance at {bench.base}, PostgreSQL {cluster.db_name}, {os.cpu_count()} CPUs, "
            f"{args.clients} client threads, {args.seconds:.0f} s per run; load average {os.getloadavg()[0]:.2f}; "
            f"one PBKDF2 client-secret check here: {pbkdf2_ms():.0f} ms"
        )
        clients = {"pbkdf2": ("chain-demo", bench.creds["client_secret"]), "plain": ("chain-bench-plain", plain_secret)}
        for name in args.clients_to_run.split(","):
            client_id, secret = clients[name]
            for workers in (int(w) for w in args.workers.split(",")):
                result = bench.run(client_id, secret, workers)
                results.append(result)
                result["load_avg_1m"] = round(os.getloadavg()[0], 2)
                print(
                    f"{result['client']:>6}  workers {workers}:  {result['hops_per_s']:6.1f} hops/s  "
                    f"p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  ({result['hops']} hops, "
                    f"{result['errors']} errors{' ' + str(result['error_kinds']) if result['errors'] else ''}; "
                    f"worker RSS {result['worker_rss_mib']} MiB; load {result['load_avg_1m']})",
                    flush=True,
                )
    print(json.dumps(results))
    print(f"total runtime {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
