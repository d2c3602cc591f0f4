#!/usr/bin/env python3
"""A local cluster of the IdP on this machine: N gunicorn instances (deploy/gunicorn.conf.py)
on N ports, a Celery worker and one beat, all on the real PostgreSQL and Redis.

    .venv/bin/python scripts/cluster.py [--database-url postgres://postgres@127.0.0.1:5432/test]
                                        [--kill-after 4] [--keep]

The scenario (what tests/test_cluster.py runs in CI, and what this prints):

1. A throw-away database ``chain_cluster_<pid>`` created next to the one in
   ``--database-url`` (never touched), Redis database 13 (flushed), a temp var dir;
   ``manage.py migrate`` and ``bootstrap_demo`` there.
2. Two web instances, a worker (with its metrics port) and beat, as separate process
   groups; the scenario waits for every ``/readyz``.
3. The agent chat example (scripts/agent_chat.py's conversation, driven by the test
   harness: tests/harness/chat.py) runs through both instances in turn: the harness's
   ``AddressPool`` (tests/harness/failover.py) sends each request to the next instance
   and drops one that refuses the connection. After step ``--kill-after`` the first
   instance is SIGKILLed (master and workers: a crashed machine) and the run completes
   through the other.
4. Checks (the database read by ``python -m tests.harness.inspect_chain``): every step the
   example reported is in the database exactly once with the reported parent, nothing
   else is; ``chain_grant.core.integrity.verify_chain`` holds; the worker (beat every 2 s)
   marks expired exactly the steps whose code passed ``expires`` (every code lives 20 s
   here) and deletes their DOT grants; the metrics say the same; the access logs hold no
   credential (``chain_grant.redaction.SECRET_PARAMS``).
5. Everything stops, the database is dropped and Redis database 13 flushed.

Codes and tokens are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a file: chain_grant and the test harness come from this checkout
    sys.path.insert(0, str(REPO))

from chain_grant.redaction import REDACTED, SECRET_PARAMS  # noqa: E402
from tests.harness import chat as harness_chat  # noqa: E402
from tests.harness.failover import AddressPool  # noqa: E402

PYTHON = sys.executable
BIN = Path(sys.executable).parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"

# A credential-bearing query parameter (chain_grant.redaction's list: deploy/gunicorn.conf.py
# redacts them) whose value is not the redaction mark: a leak. Checked independently of
# chain_grant.redaction.redact(), with its own pattern.
_UNREDACTED = re.compile(
    r"(?:[?&;]|%(?:25)*(?:3F|26|3B))(?:"
    + "|".join(sorted(map(re.escape, SECRET_PARAMS), key=len, reverse=True))
    + rf")(?:=|%(?:25)*3D)(?!{re.escape(REDACTED)}|%|&|\s|\"|$)",
    re.IGNORECASE,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, *, token: str | None = None, timeout: float = 3.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def metric_values(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in a Prometheus text exposition."""
    values = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            labels = key[len(name) :]
            if labels and not labels.startswith("{"):
                continue  # another metric with this prefix
            values[labels] = float(value)
    return values


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path
    port: int | None = None

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        """Signal this process's own group (it was started as a session leader: its pid)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (graceful), then SIGKILL; only while the leader is unreaped, so the group
        id is still ours."""
        if not self.alive:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Cluster:
    """The IdP as N gunicorn instances + worker + beat on a throw-away PostgreSQL database."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    web: int = 2
    gunicorn_workers: int = 2
    code_expire_seconds: int = 20
    expire_interval: float = 2.0
    log_format: str = "json"  # LOG_FORMAT of every process (gunicorn access log included)
    housekeeping: bool = True  # start the Celery worker and beat
    extra_env: dict[str, str] = field(default_factory=dict)
    keep: bool = False
    log: object = print

    def __post_init__(self):
        if not self.database_url.startswith(("postgres://", "postgresql://")):
            raise SystemExit("the cluster needs PostgreSQL: --database-url postgres://...")
        self.db_name = f"chain_cluster_{os.getpid()}"
        self.workdir = Path(tempfile.mkdtemp(prefix="chain_cluster_"))
        self.var_dir = self.workdir / "var"
        self.ports = [free_port() for _ in range(self.web)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.issuer = self.urls[0] + "/oauth"  # the public name: the same for every instance
        self.metrics_token = secrets.token_urlsafe(24)
        self.secret_key = secrets.token_urlsafe(50)
        self.webs: list[Process] = []
        self.worker: Process | None = None
        self.beat: Process | None = None
        self.worker_metrics_port = free_port()
        self.timings: dict[str, float] = {}
        self._db_created = False

    # -- environment --

    @property
    def cluster_database_url(self) -> str:
        return urlsplit(self.database_url)._replace(path="/" + self.db_name).geturl()

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IDP_", "CHAIN_", "GUNICORN_", "CELERY_", "PROMETHEUS_"))
            and k
            not in (
                "DJANGO_SETTINGS_MODULE",
                "DEBUG",
                "REDIS_URL",
                "CACHE_URL",
                "LOG_FORMAT",
                "SECRET_KEY",
                "OIDC_ISSUER",
                "OIDC_KEY_PATH",
                "METRICS_TOKEN",
                "PYTEST_CURRENT_TEST",
            )
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "idp_project.settings",
                "PYTHONPATH": str(REPO),
                "DATABASE_URL": self.cluster_database_url,
                "CELERY_BROKER_URL": self.redis_url,
                "CACHE_URL": self.redis_url,
                "CACHE_KEY_PREFIX": self.db_name,
                "IDP_VAR_DIR": str(self.var_dir),
                "SECRET_KEY": self.secret_key,
                "OIDC_ISSUER": self.issuer,
                "METRICS_TOKEN": self.metrics_token,
                "CHAIN_CODE_EXPIRE_SECONDS": str(self.code_expire_seconds),
                "OAUTH2_CODE_EXPIRE_SECONDS": str(self.code_expire_seconds),
                "CHAIN_EXPIRE_INTERVAL": str(self.expire_interval),
                "CELERY_VISIBILITY_TIMEOUT": "30",
                "LOG_FORMAT": self.log_format,
                **self.extra_env,
                **extra,
            }
        )
        return env

    def manage(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        return result.stdout

    def python(self, code: str, *args: str, timeout: float = 120) -> str:
        """``python -c code args...`` in the cluster's environment → its stdout."""
        return self._python("-c", code, *args, timeout=timeout)

    def python_module(self, module: str, *args: str, timeout: float = 120) -> str:
        """``python -m module args...`` in the cluster's environment → its stdout."""
        return self._python("-m", module, *args, timeout=timeout)

    def _python(self, *argv: str, timeout: float) -> str:
        result = subprocess.run(
            [PYTHON, *argv], cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode:
            what = argv[1] if argv[0] == "-m" else "cluster script"
            raise RuntimeError(f"{what} failed:\n{result.stderr[-4000:]}")
        return result.stdout

    # -- database and Redis --

    def _admin_sql(self, sql: str) -> None:
        import psycopg

        maintenance = urlsplit(self.database_url)._replace(scheme="postgresql", path="/postgres").geturl()
        with psycopg.connect(maintenance, autocommit=True) as connection:
            connection.execute(sql)

    def _flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3)
        try:
            client.flushdb()
        finally:
            client.close()

    # -- processes --

    def _spawn(self, name: str, argv: list[str], port: int | None = None, **env: str) -> Process:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return Process(name, popen, log, port)

    def start_web(self, index: int, workers: int | None = None) -> Process:
        metrics_dir = self.workdir / f"prometheus-web{index}"
        metrics_dir.mkdir(exist_ok=True)
        process = self._spawn(
            f"web{index}",
            [str(BIN / "gunicorn"), "-c", str(REPO / "deploy" / "gunicorn.conf.py")],
            port=self.ports[index],
            GUNICORN_BIND=f"127.0.0.1:{self.ports[index]}",
            GUNICORN_WORKERS=str(workers or self.gunicorn_workers),
            GUNICORN_PROC_NAME=f"{self.db_name}-web{index}",
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        )
        if index < len(self.webs):
            self.webs[index] = process
        else:
            self.webs.append(process)
        return process

    def start(self) -> Cluster:
        started = time.monotonic()
        self._admin_sql(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
        self._admin_sql(f"CREATE DATABASE {self.db_name}")
        self._db_created = True
        self._flush_redis()
        self.manage("migrate", "--noinput", "-v0")
        self.manage("bootstrap_demo")
        self.timings["setup_s"] = time.monotonic() - started

        booted = time.monotonic()
        for index in range(self.web):
            self.start_web(index)
        if self.housekeeping:
            self._start_housekeeping()
        for web in self.webs:
            self.wait_ready(web)
        if self.housekeeping:
            self.wait_until(
                lambda: http_get(f"http://127.0.0.1:{self.worker_metrics_port}/metrics")[0] == 200,
                60,
                "the Celery worker",
                self.worker,
            )
        self.timings["boot_s"] = time.monotonic() - booted
        return self

    def _start_housekeeping(self) -> None:
        worker_metrics = self.workdir / "prometheus-worker"
        worker_metrics.mkdir()
        self.worker = self._spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "idp_project",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "1",
                "--hostname",
                f"{self.db_name}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            port=self.worker_metrics_port,
            PROMETHEUS_MULTIPROC_DIR=str(worker_metrics),
            CELERY_METRICS_PORT=str(self.worker_metrics_port),
        )
        self.beat = self._spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "idp_project",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.workdir / "celerybeat-schedule"),
            ],
        )

    def wait_until(self, predicate, timeout: float, what: str, process: Process | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and not process.alive:
                raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}")
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}" + (f":\n{process.tail()}" if process else ""))

    def wait_ready(self, web: Process, timeout: float = 60) -> None:
        self.wait_until(
            lambda: http_get(f"http://127.0.0.1:{web.port}/readyz")[0] == 200, timeout, f"{web.name} /readyz", web
        )

    def kill_web(self, index: int) -> float:
        """SIGKILL one instance (master and workers): a crash, not a shutdown. Returns when."""
        web = self.webs[index]
        web.signal_group(signal.SIGKILL)
        web.popen.wait(10)
        return time.monotonic()

    def metrics(self, index: int) -> str:
        status, text = http_get(self.urls[index] + "/metrics", token=self.metrics_token)
        if status != 200:
            raise RuntimeError(f"/metrics of web{index}: HTTP {status}")
        return text

    def worker_metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.worker_metrics_port}/metrics")[1]

    def inspect(self, chain_id: str) -> dict:
        """What the database holds of the chain (tests/harness/inspect_chain.py)."""
        return json.loads(self.python_module("tests.harness.inspect_chain", chain_id))

    def access_entries(self, web: Process) -> list[dict]:
        """The access log entries of one instance (LOG_FORMAT=json: every line is JSON)."""
        entries = []
        for line in web.log.read_text(errors="replace").splitlines():
            entry = json.loads(line)  # raises on a line that is not JSON
            if entry.get("logger") == "gunicorn.access":
                entries.append(entry)
        return entries

    def access_logs(self) -> str:
        return "\n".join(web.log.read_text(errors="replace") for web in self.webs if web.log.exists())

    def stop(self) -> None:
        for process in [*self.webs, self.worker, self.beat]:
            if process is not None:
                process.stop()
        try:
            if self._db_created:
                self._admin_sql(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
            self._flush_redis()
        finally:
            if not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


# --- the scenario -------------------------------------------------------------------------


def run_scenario(
    cluster: Cluster, *, kill_after: int | None = 4, kill_index: int = 0, expiry_timeout: float = 90
) -> dict:
    """The agent chat through every instance, one killed after step ``kill_after``; then the
    checks. Returns a report (figures and what the checks saw); raises AssertionError."""
    events, killed = [], {}
    run_started = time.monotonic()

    def on_step(event):
        events.append(event)
        if kill_after is not None and event.index == kill_after and not killed:
            killed["at"] = cluster.kill_web(kill_index) - run_started
            killed["after_step"] = event.index

    out = io.StringIO()
    pool = AddressPool(cluster.urls)  # the IdP's name is the first instance's URL (the issuer's)
    result = harness_chat.run(pool=pool, var_dir=cluster.var_dir, on_step=on_step, out=out)
    run_seconds = time.monotonic() - run_started
    transcript = out.getvalue()

    report = {
        "chain_id": result.chain_id,
        "steps": len(result.events),
        "run_s": round(run_seconds, 2),
        "killed": {"instance": kill_index, **killed} if killed else None,
        "api_verification": result.verification,
    }
    assert [e.index for e in events] == list(range(len(result.events))), "on_step saw every step once, in order"
    report["requests_by_address"] = dict(pool.served)
    if kill_after is not None:
        assert killed, "the instance was killed midway"
        assert not cluster.webs[kill_index].alive
        assert kill_after < len(result.events) - 1, "steps completed after the kill"
        assert pool.dropped == [cluster.urls[kill_index]], "the killed instance was dropped from the pool"

    # 1. The database holds exactly the reported steps, with the reported parents.
    seen = cluster.inspect(result.chain_id)
    steps = seen["steps"]
    by_digest = {s["digest8"]: s for s in steps}
    assert len(steps) == len(result.events) == len(by_digest), "no duplicated or lost step"
    assert seen["all_steps"] == len(steps), "no step outside the chain"
    ids = {}
    for event in result.events:
        row = by_digest[event.code_digest_prefix]
        ids[event.index] = row["id"]
        assert row["kind"] == event.kind and row["depth"] == event.depth
        assert row["parent"] == (ids[event.parent] if event.parent is not None else None)
    assert seen["verification"] == {"ok": True, "checked": len(steps), "first_bad_step": None, "problems": []}, seen[
        "verification"
    ]
    report["db_verification"] = seen["verification"]
    report["kinds"] = {k: sum(1 for s in steps if s["kind"] == k) for k in ("wallet", "agent", "user")}

    # 2. Both instances served the run (round-robin); the survivor finished it.
    access = {web.name: cluster.access_entries(web) for web in cluster.webs}
    served = {
        name: sum(1 for e in entries if e["method"] == "POST" and e["path"].startswith("/oauth/token"))
        for name, entries in access.items()
    }
    report["token_requests_by_instance"] = served
    assert all(served.values()), f"every instance served token requests: {served}"
    report["requests_by_instance"] = {name: len(entries) for name, entries in access.items()}

    # 3. No code, token or secret in any log line (access, error, Django), and some were redacted.
    texts = [cluster.access_logs()] + ["?" + e["query"] + " " + e["referer"] for v in access.values() for e in v]
    leaks = [m.group(0)[:24] for text in texts for m in _UNREDACTED.finditer(text)]
    assert not leaks, f"unredacted credentials in the logs: {leaks[:3]}"
    report["redacted_params_in_logs"] = sum(e["query"].count(REDACTED) for v in access.values() for e in v)
    assert report["redacted_params_in_logs"], "the run's code= / response_code= parameters were redacted"

    # 4. The worker expires exactly what passed `expires` (beat every expire_interval s).
    # Every live step whose code expires within the wait (the hops' 20 s codes) must be
    # marked by the worker; a step with a longer-lived code must not be, yet.
    expiry_started = time.monotonic()
    horizon = time.time() + expiry_timeout - 4 * cluster.expire_interval - 5
    short = {
        s["id"]: s["expires"] for s in steps if not s["exchanged"] and not s["revoked"] and s["expires"] <= horizon
    }
    assert short, "the run left live codes to expire"
    target = max(short.values())

    def short_ones_marked():
        marked = {s["id"] for s in cluster.inspect(result.chain_id)["steps"] if s["ended_at"]}
        return time.time() > target and short.keys() <= marked

    cluster.wait_until(short_ones_marked, expiry_timeout, "the worker to mark the expired steps", cluster.worker)
    final = cluster.inspect(result.chain_id)
    # Marked by expiry: ended_at; expired_at too for the unused ones (a step the chain
    # went on from was handed off, not expired).
    expired = [s for s in final["steps"] if s["ended_at"] and not (s["exchanged"] or s["revoked"])]
    for s in final["steps"]:
        if s["exchanged"] or s["revoked"]:
            assert s["expired_at"] is None, "an exchanged/revoked step is never marked expired"
        elif s["ended_at"] is not None:
            assert s["expires"] <= s["ended_at"] + 1, "marked only after its code expired"
            assert s["state"] in ("expired", "handed_off"), s["state"]
        else:
            assert s["expires"] > final["now"] - 2 * cluster.expire_interval - 2, "a due step left unmarked"
    assert final["grants_of_expired_steps"] == 0, "the DOT grants of expired steps are deleted"
    report["lifetimes_s"] = sorted({round(s["expires"] - s["created"]) for s in final["steps"]})
    assert final["verification"]["ok"], "expiry is state, the chain still verifies"
    report["expired_by_worker"] = len(expired)
    report["expiry_wait_s"] = round(time.monotonic() - expiry_started, 2)
    report["exchanged"] = sum(1 for s in final["steps"] if s["exchanged"])

    # 5. Metrics: the worker counted what it expired; the survivor counted its hand-offs.
    worker_expired = sum(metric_values(cluster.worker_metrics(), "chain_grant_steps_expired_total").values())
    expired_after = sum(
        1 for s in cluster.inspect(result.chain_id)["steps"] if s["ended_at"] and not (s["exchanged"] or s["revoked"])
    )
    assert len(expired) <= worker_expired <= expired_after, (len(expired), worker_expired, expired_after)
    survivors = [i for i, web in enumerate(cluster.webs) if web.alive]
    handoffs = {}
    for index in survivors:
        for labels, value in metric_values(cluster.metrics(index), "chain_grant_handoffs_total").items():
            handoffs[labels] = handoffs.get(labels, 0) + value
    assert handoffs and all('result="success"' in labels for labels in handoffs), handoffs
    report["survivor_handoff_metrics"] = handoffs
    report["transcript_lines"] = len(transcript.splitlines())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="a PostgreSQL server (a database chain_cluster_<pid> is created there and dropped)",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="flushed before and after")
    parser.add_argument("--web", type=int, default=2, help="gunicorn instances")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--kill-after", type=int, default=4, help="kill the first instance after this step (-1: never)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    cluster = Cluster(args.database_url, args.redis_url, web=args.web, gunicorn_workers=args.workers, keep=args.keep)
    with cluster:
        print(
            f"==> cluster up: {', '.join(cluster.urls)} + worker + beat, database {cluster.db_name} "
            f"(setup {cluster.timings['setup_s']:.1f} s, boot {cluster.timings['boot_s']:.1f} s)"
        )
        report = run_scenario(cluster, kill_after=None if args.kill_after < 0 else args.kill_after)
    report["total_s"] = round(time.monotonic() - started, 1)
    report.update({k: round(v, 1) for k, v in cluster.timings.items()})
    print(json.dumps(report, indent=2, default=str))
    if args.keep:
        print(f"logs kept in {cluster.workdir}/logs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
