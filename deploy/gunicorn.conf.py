"""gunicorn configuration for idp_project (every setting can be overridden by env).

    gunicorn -c deploy/gunicorn.conf.py idp_project.wsgi

* Workers: ``GUNICORN_WORKERS`` (or ``WEB_CONCURRENCY``); default = usable CPUs + 1,
  CPUs counted from the affinity mask and the cgroup quota (a container limited to
  2 CPUs on a 64-core node gets 3 workers, not 129). Token requests are CPU-bound
  (PBKDF2 client-secret check); docs/deploy.md has the measured figures.
* Timeouts: ``GUNICORN_TIMEOUT`` (30 s, a worker silent that long is killed),
  graceful 30 s, keep-alive 5 s; workers are recycled after ~1000 requests.
* Access log on stdout; every code, token, secret or password in the request line,
  the query string, the referer or a logged header is replaced by ``[REDACTED]``
  (also in error-log lines and their tracebacks, which can carry the URI).
  ``LOG_FORMAT=json``: one JSON object per line. In each worker, once the app is loaded,
  every handler oauthlib's, DOT's and Django's records reach gets chain_grant's
  RedactFilter if its LOGGING left it without one.
* Prometheus multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` (a directory of its own,
  emptied at start; a temporary one when unset), so ``/metrics`` adds up all workers.
"""

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gunicorn import glogging

# The project root (chain_grant, idp_project) before gunicorn changes directory to it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def usable_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = None
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "max 100000" or "200000 100000"
            limit, period = f.read().split()[:2]
            if limit != "max":
                quota = int(limit) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f1, open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f2:
                limit, period = int(f1.read()), int(f2.read())
                if limit > 0:
                    quota = limit / period
        except (OSError, ValueError):
            pass
    if quota:
        cpus = min(cpus, max(1, -(-quota // 1)))  # ceil
    return max(1, int(cpus))


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# --- server -----------------------------------------------------------------------------
wsgi_app = "idp_project.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")
workers = _env_int("GUNICORN_WORKERS", _env_int("WEB_CONCURRENCY", usable_cpus() + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = _env_int("GUNICORN_THREADS", 1)
timeout = _env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 1000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 100)
proc_name = os.environ.get("GUNICORN_PROC_NAME", "idp")
# Heartbeat files in memory (a container's overlay filesystem can stall them).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
# gunicorn >= 25.1 opens a control socket under $HOME by default: two instances on one
# host would share it, and a read-only container has no $HOME. Opt in with a path.
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]

# --- logging ----------------------------------------------------------------------------
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = os.environ.get("GUNICORN_ERROR_LOG", "-")
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s'
JSON_LOGS = os.environ.get("LOG_FORMAT", "").lower() == "json"

# The redaction rules live in the app, so runserver's and Django's logs use the same ones.
from chain_grant import redaction  # noqa: E402
from chain_grant.redaction import REDACTED, SECRET_HEADERS, SECRET_PARAMS, RedactFilter, redact  # noqa: E402,F401


class JsonLogFormatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record):
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def _header_name(atom: str) -> str:
    """``{authorization}i`` / ``{set-cookie}o`` / ``{http_authorization}e`` -> the header name."""
    name, kind = atom[1:-2], atom[-2:]
    if kind == "}e":
        return name[5:].replace("_", "-") if name.startswith("http_") else ""
    return name if kind in ("}i", "}o") else ""


class RedactingLogger(glogging.Logger):
    """gunicorn's logger with credentials redacted from every atom and line."""

    def setup(self, cfg):
        super().setup(cfg)
        # On the handlers (a record propagated to them skips a logger's filters), and on the
        # loggers: a handler added later (syslog, reopened files) still gets redacted lines.
        for log in (self.error_log, self.access_log):
            for target in (log, *log.handlers):
                if not redaction.redacts(target):
                    target.addFilter(RedactFilter())
        if JSON_LOGS:
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonLogFormatter())
            for handler in self.access_log.handlers:
                handler.setFormatter(logging.Formatter("%(message)s"))

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key, value in atoms.items():
            if key[:1] == "{" and _header_name(key) in SECRET_HEADERS:
                atoms[key] = REDACTED
            elif isinstance(value, str):
                atoms[key] = redact(value)
        return atoms

    def access(self, resp, req, environ, request_time):
        if not JSON_LOGS:
            return super().access(resp, req, environ, request_time)
        if not self.access_log_enabled:
            return None
        atoms = self.atoms(resp, req, environ, request_time)
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "logger": "gunicorn.access",
            "remote": atoms["h"],
            "method": atoms["m"],
            "path": atoms["U"],
            "query": atoms["q"] or "",
            "protocol": atoms["H"],
            "status": int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"],
            "bytes": atoms["B"],
            "duration_ms": atoms["M"],
            "referer": atoms["f"],
            "user_agent": atoms["a"],
        }
        try:
            self.access_log.info(json.dumps(entry, ensure_ascii=False))
        except Exception:
            self.exception("access log failed")
        return None


logger_class = RedactingLogger

# --- Prometheus multiprocess mode -------------------------------------------------------
_OWN_METRICS_DIR = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _OWN_METRICS_DIR = tempfile.mkdtemp(prefix="gunicorn-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR  # workers inherit it before importing the app


def on_starting(server):
    """Start with an empty metrics directory: stale files would add old counts."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))


def post_worker_init(worker):
    """The app is loaded (Django configured its LOGGING): every handler that records of
    oauthlib, DOT, django.request, django.server or the root logger reach gets a
    RedactFilter if it has none (manage.py check warns about them: chain_grant.W005)."""
    added = redaction.install()
    if added:
        worker.log.warning("added chain_grant's RedactFilter to log handlers without one: %s", added)


def child_exit(server, worker):
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)
