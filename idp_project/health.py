"""Operations plumbing for the IdP: probes, the metrics route, and a Redis cache that
is only ever a cache.

* ``/healthz`` (liveness): the process answers; touches nothing else, so a database
  outage never makes an orchestrator restart every replica.
* ``/readyz`` (readiness): the database answers ``SELECT 1`` and every migration on
  disk is applied (503 otherwise); Redis (cache and/or Celery broker, when
  configured) is pinged and reported. Redis down is ``degraded`` but still 200:
  nothing on the request path needs it (the cache fails open, no request enqueues a
  task), and taking every replica out of the load balancer for it would turn a
  housekeeping pause into an outage. ``READYZ_REQUIRE_REDIS = True`` makes it a 503.
* :class:`ProbeMiddleware` answers ``/healthz``, ``/readyz`` and ``/metrics`` before
  any other middleware: probes and scrapers call a pod by IP (no ``ALLOWED_HOSTS``
  name) over plain HTTP (no TLS redirect). ``/metrics`` keeps its bearer-token check.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import JsonResponse

logger = logging.getLogger("idp_project.health")

REDIS_TIMEOUT = 1.0  # seconds, for readiness pings
_migrations_applied = False  # once true, stays true for this process (migrations only move forward)


def _no_store(response):
    response["Cache-Control"] = "no-store"
    return response


def healthz(request):
    """Liveness: this process serves requests."""
    return _no_store(JsonResponse({"status": "ok"}))


def _check_database() -> str:
    global _migrations_applied
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    if not _migrations_applied:
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            return "migrations pending"
        _migrations_applied = True
    return "ok"


def redis_urls() -> dict[str, str]:
    """The Redis URLs this IdP uses: the cache's and the Celery broker's, when Redis."""
    urls = {}
    cache = settings.CACHES.get("default", {})
    if cache.get("BACKEND", "").endswith(("RedisCache", "FailSafeRedisCache")):
        location = cache.get("LOCATION")
        urls["cache"] = location[0] if isinstance(location, (list, tuple)) else location
    broker = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if broker.startswith(("redis://", "rediss://", "unix://")):
        urls["broker"] = broker
    return urls


def _ping_redis(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def readyz(request):
    """Readiness: the database (and migrations); Redis when configured (see module doc)."""
    checks: dict[str, str] = {}
    ready = True
    try:
        checks["database"] = _check_database()
        ready = checks["database"] == "ok"
    except Exception as exc:
        logger.warning("readiness: database check failed (%s)", type(exc).__name__)
        checks["database"] = "error"
        ready = False
    degraded = False
    for name, url in redis_urls().items():
        try:
            checks[f"redis_{name}"] = _ping_redis(url)
        except Exception as exc:
            logger.warning("readiness: redis %s ping failed (%s)", name, type(exc).__name__)
            checks[f"redis_{name}"] = "error"
            degraded = True
    if degraded and getattr(settings, "READYZ_REQUIRE_REDIS", False):
        ready = False
    status = "unavailable" if not ready else "degraded" if degraded else "ok"
    return _no_store(JsonResponse({"status": status, "checks": checks}, status=200 if ready else 503))


def metrics(request):
    from chain_grant.metrics import metrics_view

    return metrics_view(request)


PROBES = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}


class ProbeMiddleware:
    """Answer the probe and metrics paths first (no host check, no TLS redirect)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        view = PROBES.get(request.path_info.rstrip("/") or "/")
        if view is not None:
            return view(request)
        return self.get_response(request)


class FailSafeRedisCache(RedisCache):
    """Django's Redis cache, failing open: when Redis is down or slow a read is a miss
    and a write is dropped (logged, at most once per ``RETRY_AFTER`` seconds), and
    Redis is not asked again for ``RETRY_AFTER`` seconds, so an outage costs at most
    one socket timeout per process per interval instead of a 500 per request."""

    RETRY_AFTER = 5.0
    _down_until = 0.0

    def _guard(self, operation: str, default, call, *args, **kwargs):
        from redis.exceptions import RedisError

        if time.monotonic() < self._down_until:
            return default
        try:
            return call(*args, **kwargs)
        except RedisError as exc:
            FailSafeRedisCache._down_until = time.monotonic() + self.RETRY_AFTER
            logger.warning(
                "cache: redis %s failed (%s); serving without the cache for %.0f s",
                operation,
                type(exc).__name__,
                self.RETRY_AFTER,
            )
            return default

    def get(self, key, default=None, version=None):
        return self._guard("get", default, super().get, key, default, version)

    def get_many(self, keys, version=None):
        return self._guard("get_many", {}, super().get_many, keys, version)

    def has_key(self, key, version=None):
        return self._guard("has_key", False, super().has_key, key, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guard("add", False, super().add, key, value, timeout, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guard("set", None, super().set, key, value, timeout, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guard("set_many", list(data), super().set_many, data, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guard("touch", False, super().touch, key, timeout, version)

    def delete(self, key, version=None):
        return self._guard("delete", False, super().delete, key, version)

    def delete_many(self, keys, version=None):
        return self._guard("delete_many", None, super().delete_many, keys, version)

    def incr(self, key, delta=1, version=None):
        # A missing key still raises ValueError (the cache API); an outage is a miss too.
        result = self._guard("incr", None, super().incr, key, delta, version)
        if result is None:
            raise ValueError(f"Key '{key}' not found (cache unavailable)")
        return result

    def clear(self):
        return self._guard("clear", False, super().clear)
