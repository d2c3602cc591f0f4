"""Probes (/healthz, /readyz), the fail-open Redis cache, and Prometheus metrics
(chain_grant.metrics): fed by the chain signals and the token endpoint, protected by a
bearer token, optional (the app works without prometheus-client). SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.db.utils import OperationalError
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry

from chain_grant import metrics
from chain_grant.core import retention as housekeeping
from chain_grant.models import ChainedGrant
from idp_project import health
from idp_project.settings import JsonFormatter
from tests.factories import build_chain
from tests.helpers import free_port

REPO = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379/12"
NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not redis_up(), reason="needs Redis on 127.0.0.1:6379 (.ci/run starts it)")


@pytest.fixture(autouse=True)
def fresh_readiness(monkeypatch):
    monkeypatch.setattr(health, "_migrations_applied", False)
    monkeypatch.setattr(health.FailSafeRedisCache, "_down_until", 0.0)


# --- probes --------------------------------------------------------------------------------


def test_healthz_is_liveness_only_and_never_touches_the_database(client):
    response = client.get("/healthz")  # no django_db mark: a query here would raise
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readyz_checks_the_database_and_migrations(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


@pytest.mark.django_db
def test_readyz_is_503_while_a_migration_is_pending(client, monkeypatch):
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets: [("pending", False)])
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "migrations pending"}}


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_fails_and_says_no_more(client, monkeypatch, caplog):
    def broken(self, *args, **kwargs):
        raise OperationalError("could not connect to server: password=hunter2")

    monkeypatch.setattr(type(connections["default"]), "cursor", broken)
    with caplog.at_level(logging.WARNING, logger="idp_project.health"):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "error"}}
    assert "hunter2" not in response.content.decode() and "hunter2" not in caplog.text
    assert "OperationalError" in caplog.text


@needs_redis
@pytest.mark.django_db
def test_readyz_pings_the_configured_redis(client, settings):
    settings.CACHES = {"default": {"BACKEND": "idp_project.health.FailSafeRedisCache", "LOCATION": REDIS}}
    settings.CELERY_BROKER_URL = REDIS
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis_cache": "ok", "redis_broker": "ok"}


@pytest.mark.django_db
def test_redis_down_is_degraded_not_unready_unless_required(client, settings):
    settings.CACHES = {"default": {"BACKEND": "idp_project.health.FailSafeRedisCache", "LOCATION": NOWHERE}}
    settings.CELERY_BROKER_URL = "filesystem://"
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "checks": {"database": "ok", "redis_cache": "error"}}

    settings.READYZ_REQUIRE_REDIS = True
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "unavailable"


def test_probes_answer_before_host_validation_and_tls_redirect(client, settings):
    """Kubelet and Prometheus call a pod by its IP over plain HTTP."""
    settings.ALLOWED_HOSTS = ["idp.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/healthz/", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/", HTTP_HOST="10.1.2.3:8000").status_code == 400  # everything else: as before
    assert client.get("/", HTTP_HOST="idp.example.com").status_code == 301  # to https


def test_the_routes_exist_without_the_middleware_too(client, settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != "idp_project.health.ProbeMiddleware"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/metrics").status_code == 200


# --- the cache is only a cache -----------------------------------------------------------


@pytest.fixture
def redis_connects(monkeypatch) -> list:
    """Every attempt of redis-py to open a TCP connection, as (host, port)."""
    import redis.connection

    attempts = []
    real = redis.connection.Connection._connect

    def counted(self):
        attempts.append((self.host, self.port))
        return real(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counted)
    return attempts


def test_the_cache_fails_open_when_redis_is_down(caplog, redis_connects):
    cache = health.FailSafeRedisCache(NOWHERE, {})
    with caplog.at_level(logging.WARNING, logger="idp_project.health"):
        assert cache.get("agent-keys:planner", "miss") == "miss"
        tried = len(redis_connects)
        assert tried >= 1 and set(redis_connects) == {("127.0.0.1", 1)}  # the first call did try
        assert cache.set("k", "v") is None
        assert cache.add("k", "v") is False
        assert cache.get_many(["a", "b"]) == {}
        assert cache.delete("k") is False
        with pytest.raises(ValueError):
            cache.incr("counter")
    assert caplog.text.count("serving without the cache") == 1  # one failure, then it stops asking
    assert len(redis_connects) == tried  # marked down: the calls after the first did not connect

    for _ in range(100):
        cache.get("k")
    assert len(redis_connects) == tried  # no connection attempt while marked down


@needs_redis
def test_the_cache_works_and_recovers_when_redis_is_up(monkeypatch):
    cache = health.FailSafeRedisCache(REDIS, {"KEY_PREFIX": f"test-{os.getpid()}"})
    monkeypatch.setattr(health.FailSafeRedisCache, "_down_until", time.monotonic() + 60)
    assert cache.get("k", "miss") == "miss"  # marked down: not even asked
    monkeypatch.setattr(health.FailSafeRedisCache, "_down_until", 0.0)
    cache.set("k", {"kid": "abc"}, 30)
    assert cache.get("k") == {"kid": "abc"}
    cache.delete("n")
    assert cache.add("n", 1) is True and cache.incr("n") == 2
    cache.delete_many(["k", "n"])
    assert cache.get("k") is None and cache.get("n") is None


# --- metrics --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_hop_is_counted_by_result_and_timed(flow, alice, planner):
    before = {
        "ok": sample("chain_grant_handoffs_total", result="success", status="200"),
        "bad": sample("chain_grant_handoffs_total", result="invalid_grant", status="400"),
        "timed": sample("chain_grant_token_request_seconds_count", grant_type="code_chain"),
        "agent": sample("chain_grant_steps_created_total", kind="agent"),
        "exchange": sample("chain_grant_token_request_seconds_count", grant_type="authorization_code"),
    }
    code, _ = flow.authorize(alice)
    child, verifier, _ = flow.advance(code, planner)
    refused = flow.hop(child, planner.proof(code, aud=flow.issuer))  # c_hash of another code
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert flow.exchange(child, verifier).status_code == 200

    assert sample("chain_grant_handoffs_total", result="success", status="200") == before["ok"] + 1
    assert sample("chain_grant_handoffs_total", result="invalid_grant", status="400") == before["bad"] + 1
    assert sample("chain_grant_token_request_seconds_count", grant_type="code_chain") == before["timed"] + 2
    assert sample("chain_grant_steps_created_total", kind="agent") == before["agent"] + 1
    assert sample("chain_grant_token_request_seconds_count", grant_type="authorization_code") == before["exchange"] + 1
    assert sample("chain_grant_token_request_seconds_sum", grant_type="code_chain") > 0


@pytest.mark.django_db
def test_only_the_token_endpoint_is_measured_and_labels_stay_bounded(client, flow):
    timed = sample("chain_grant_token_request_seconds_count", grant_type="other")
    response = client.post("/oauth/token", {"grant_type": "x" * 200}, **flow.auth())
    assert response.status_code == 400
    assert sample("chain_grant_token_request_seconds_count", grant_type="other") == timed + 1
    assert sample("chain_grant_token_request_seconds_count", grant_type="x" * 200) == 0

    total = sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "chain_grant_token_request_seconds"
        for s in m.samples
        if s.name.endswith("_count")
    )
    client.post("/oauth/introspect/", {"token": "nope"}, **flow.auth())
    client.get("/oauth/.well-known/openid-configuration")
    assert total == sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "chain_grant_token_request_seconds"
        for s in m.samples
        if s.name.endswith("_count")
    )


@pytest.mark.django_db
def test_an_unknown_error_code_is_labelled_other():
    from django.http import JsonResponse

    assert metrics._error_label(JsonResponse({"error": "made_up_<script>"}, status=400)) == "other"
    assert metrics._error_label(JsonResponse({"error": "invalid_scope"}, status=400)) == "invalid_scope"
    assert metrics._error_label(JsonResponse({}, status=200)) == "success"


@pytest.mark.django_db
def test_replay_and_revocation_are_counted(flow, alice, planner):
    replays = sample("chain_grant_replays_total")
    revocations = sample("chain_grant_revocations_total")
    revoked = sample("chain_grant_revoked_steps_total")
    code, _ = flow.authorize(alice)
    child, verifier, _ = flow.advance(code, planner)
    assert flow.exchange(child, verifier).status_code == 200
    assert flow.exchange(child, verifier).status_code == 400  # the replay
    assert sample("chain_grant_replays_total") == replays + 1
    assert sample("chain_grant_revocations_total") == revocations + 1
    assert sample("chain_grant_revoked_steps_total") == revoked + 1


@pytest.mark.django_db
def test_expired_and_purged_steps_are_counted(app, alice):
    expired, purged = sample("chain_grant_steps_expired_total"), sample("chain_grant_chains_purged_total")
    root = build_chain(app, alice, 5, code_prefix="m")
    ChainedGrant.objects.chain(root.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert housekeeping.expire_steps(batch_size=2).steps == 5
    assert sample("chain_grant_steps_expired_total") == expired + 5
    ChainedGrant.objects.chain(root.pk).update(ended_at=timezone.now() - timedelta(days=400))
    assert housekeeping.purge_chains().chains == 1
    assert sample("chain_grant_chains_purged_total") == purged + 1


def test_a_failing_receiver_never_breaks_the_signal(monkeypatch, caplog):
    from chain_grant import signals

    monkeypatch.setattr(metrics, "STEPS_EXPIRED", None)  # .inc() on None raises inside the receiver
    with caplog.at_level(logging.ERROR, logger="chain_grant.metrics"):
        signals.steps_expired.send(sender=ChainedGrant, count=3)
    assert "metrics receiver _on_expired failed" in caplog.text


def test_metrics_view_serves_the_exposition(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response["Cache-Control"] == "no-store"
    body = response.content.decode()
    for name in (
        "chain_grant_handoffs_total",
        "chain_grant_token_request_seconds",
        "chain_grant_replays_total",
        "chain_grant_revocations_total",
        "chain_grant_steps_expired_total",
        "chain_grant_chains_purged_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in body
    assert client.post("/metrics").status_code == 405


def test_metrics_token_protects_the_view(client, settings):
    settings.CHAIN_GRANT_METRICS_TOKEN = "s3cret-scrape"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics").headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-scrape").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape").status_code == 200


def test_metrics_are_off_when_a_token_is_required_and_missing(client, settings):
    settings.CHAIN_GRANT_METRICS_TOKEN = None
    settings.CHAIN_GRANT_METRICS_REQUIRE_TOKEN = True  # what IDP_PRODUCTION=1 sets
    assert client.get("/metrics").status_code == 404
    settings.CHAIN_GRANT_METRICS_TOKEN = "t"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").status_code == 200


def test_multiprocess_mode_aggregates_a_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = metrics.registry()
    assert isinstance(registry, CollectorRegistry) and registry is not REGISTRY
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert metrics.registry() is REGISTRY


def test_a_worker_serves_its_own_metrics_when_a_port_is_set(settings):
    settings.CHAIN_GRANT_WORKER_METRICS_PORT = None
    assert metrics.start_worker_metrics_server() is None
    settings.CHAIN_GRANT_WORKER_METRICS_PORT = port = free_port()
    server, thread = metrics.start_worker_metrics_server()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"chain_grant_steps_expired_total" in response.read()
    finally:
        server.shutdown()
        server.server_close()
    from celery.signals import worker_ready

    assert any("chain_grant.metrics.worker" in str(key) for key, _ in worker_ready.receivers)


WITHOUT_PROMETHEUS = r"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Block())
import django
django.setup()
from django.core.management import call_command
from django.test import Client
from chain_grant import metrics, signals
from chain_grant.models import ChainedGrant

call_command("check")
call_command("migrate", verbosity=0)
signals.steps_expired.send(sender=ChainedGrant, count=2)
client = Client()
token = client.post("/oauth/token", {"grant_type": "code_chain"})
print(json.dumps({
    "available": metrics.AVAILABLE,
    "prometheus_imported": "prometheus_client" in sys.modules,
    "metrics": client.get("/metrics").status_code,
    "healthz": client.get("/healthz").status_code,
    "token_endpoint": [token.status_code, token.json()["error"]],
}))
"""


def test_the_app_works_without_prometheus_client(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "IDP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ALLOWED_HOSTS": "testserver",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROMETHEUS], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "available": False,
        "prometheus_imported": False,
        "metrics": 503,  # says why, instead of an empty exposition
        "healthz": 200,
        "token_endpoint": [400, "invalid_request"],  # the token endpoint still answers (OAuth error, no 500)
    }


# --- JSON logs --------------------------------------------------------------------------------


def test_json_formatter_writes_one_object_per_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("chain_grant", logging.ERROR, __file__, 1, "failed %s", ("x\ny",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "chain_grant" and entry["message"] == "failed x\ny"
    assert entry["time"].endswith("Z") and "RuntimeError: boom" in entry["exc"]


def test_log_format_json_configures_django_and_chain_grant(tmp_path):
    code = (
        "import django, logging; django.setup(); logging.getLogger('chain_grant').warning('hello %s', 'json');"
        "logging.getLogger('django.request').error('Internal Server Error: /x')"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "idp_project.settings",
        "LOG_FORMAT": "json",
        "IDP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.strip().splitlines()]
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("chain_grant", "hello json"),
        ("django.request", "Internal Server Error: /x"),
    ]
