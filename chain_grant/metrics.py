"""Prometheus metrics for chain_grant, fed from its signals and from the token endpoint.

Optional: everything here works (as a no-op) without ``prometheus-client``
(``pip install django-chain-grant[metrics]``), so importing this module, listing the
middleware or routing the view never breaks an IdP that does not install it.

    MIDDLEWARE = ["chain_grant.metrics.TokenMetricsMiddleware", ...]   # early: it times the whole request
    path("metrics", chain_grant.metrics.metrics_view)

Metrics (counters carry ``_total`` in the exposition):

* ``chain_grant_handoffs_total{result, status}``: ``grant_type=code_chain`` responses
  of the token endpoint, ``result`` = ``success`` or the OAuth ``error`` code.
* ``chain_grant_token_request_seconds{grant_type}``: token endpoint latency.
* ``chain_grant_steps_created_total{kind}``, ``chain_grant_replays_total``,
  ``chain_grant_revocations_total`` / ``chain_grant_revoked_steps_total``,
  ``chain_grant_steps_expired_total``, ``chain_grant_chains_purged_total``.

Multi-process servers (gunicorn workers, Celery's prefork pool) must set
``PROMETHEUS_MULTIPROC_DIR`` (an empty directory per process group) before start;
:func:`metrics_view` then aggregates every process. Django settings:

* ``CHAIN_GRANT_METRICS_TOKEN``: when set, the view wants ``Authorization: Bearer <token>``.
* ``CHAIN_GRANT_METRICS_REQUIRE_TOKEN``: when true and no token is set, the view is off (404).
* ``CHAIN_GRANT_WORKER_METRICS_PORT`` / ``_ADDR``: a Celery worker that imports this
  module (``CELERY_IMPORTS``) serves its own metrics on that port (no authentication:
  bind it to an internal address).

No label ever carries a code, a token, a client or a free-text reason: label values come
from fixed sets, so the number of series is bounded.
"""

from __future__ import annotations

import hmac
import logging
import os
import time

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpResponse, HttpResponseNotFound

from . import signals

try:  # optional dependency
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised by a subprocess test
    AVAILABLE = False

logger = logging.getLogger(__name__)

GRANT_TYPES = frozenset(
    {
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "code_chain",
        "password",
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    }
)
OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        "server_error",
        "temporarily_unavailable",
        "invalid_dpop_proof",
    }
)
KINDS = frozenset({"wallet", "user", "agent"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)

if AVAILABLE:
    HANDOFFS = Counter(
        "chain_grant_handoffs", "code_chain hand-offs at the token endpoint, by result.", ["result", "status"]
    )
    TOKEN_LATENCY = Histogram(
        "chain_grant_token_request_seconds",
        "Token endpoint latency, by grant type.",
        ["grant_type"],
        buckets=LATENCY_BUCKETS,
    )
    STEPS_CREATED = Counter("chain_grant_steps_created", "Chain steps created, by kind.", ["kind"])
    REPLAYS = Counter("chain_grant_replays", "Replayed (already exchanged) codes; each revokes its subtree.")
    REVOCATIONS = Counter("chain_grant_revocations", "Subtree revocations that revoked at least one step.")
    REVOKED_STEPS = Counter("chain_grant_revoked_steps", "Steps revoked (replays, admin, API).")
    STEPS_EXPIRED = Counter("chain_grant_steps_expired", "Steps marked expired by housekeeping.")
    CHAINS_PURGED = Counter("chain_grant_chains_purged", "Whole chains deleted by the retention purge.")


def _safe(receiver):
    """Signal receivers must not raise (signals.py): a metrics bug never fails a hop."""

    def wrapper(sender, **kwargs):
        try:
            receiver(**kwargs)
        except Exception:
            logger.exception("chain_grant metrics receiver %s failed", receiver.__name__)

    wrapper.__name__ = receiver.__name__
    return wrapper


@_safe
def _on_step_created(step=None, **_):
    kind = getattr(step, "kind", None)
    STEPS_CREATED.labels(kind=kind if kind in KINDS else "other").inc()


@_safe
def _on_replay(**_):
    REPLAYS.inc()


@_safe
def _on_revoked(count=0, **_):
    REVOCATIONS.inc()
    REVOKED_STEPS.inc(max(int(count or 0), 0))


@_safe
def _on_expired(count=0, **_):
    STEPS_EXPIRED.inc(max(int(count or 0), 0))


@_safe
def _on_purged(**_):
    CHAINS_PURGED.inc()


RECEIVERS = (
    (signals.step_created, _on_step_created),
    (signals.replay_detected, _on_replay),
    (signals.chain_revoked, _on_revoked),
    (signals.steps_expired, _on_expired),
    (signals.chain_purged, _on_purged),
)


def connect() -> None:
    """Connect the receivers (idempotent; done on import when prometheus-client is there)."""
    if AVAILABLE:
        for signal, receiver in RECEIVERS:
            signal.connect(receiver, weak=False, dispatch_uid=f"chain_grant.metrics.{receiver.__name__}")


connect()


def registry():
    """The registry to expose: every process's values in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        aggregated = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregated)
        return aggregated
    return prometheus_client.REGISTRY


def _grant_type_label(value: str | None) -> str:
    if not value:
        return "none"
    return value if value in GRANT_TYPES else "other"


def _error_label(response) -> str:
    if 200 <= response.status_code < 300:
        return "success"
    try:
        import json

        error = json.loads(response.content).get("error")
    except Exception:  # (not JSON, streaming, not a dict)
        error = None
    return error if error in OAUTH_ERRORS else "other"


def _is_token_endpoint(request) -> bool:
    """DOT's token view (or a subclass), whatever path or name the host mounted it under
    (``oauth2_provider:token``, or the slashless PoC alias)."""
    from oauth2_provider.views import TokenView

    match = getattr(request, "resolver_match", None)
    view_class = getattr(getattr(match, "func", None), "view_class", None)
    return isinstance(view_class, type) and issubclass(view_class, TokenView)


class TokenMetricsMiddleware:
    """Times the token endpoint and counts ``code_chain`` responses by result.

    Put it early in ``MIDDLEWARE`` (it measures everything after it). It reads
    ``grant_type`` only, after the view has parsed the form, and never logs anything.
    """

    def __init__(self, get_response):
        if not AVAILABLE:
            raise MiddlewareNotUsed("prometheus-client is not installed")
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        if request.method == "POST" and _is_token_endpoint(request):
            try:
                self._observe(request, response, time.perf_counter() - started)
            except Exception:
                logger.exception("chain_grant token metrics failed")
        return response

    @staticmethod
    def _observe(request, response, elapsed: float) -> None:
        try:
            grant_type = request.POST.get("grant_type")
        except Exception:  # (unreadable body: still time it)
            grant_type = None
        TOKEN_LATENCY.labels(grant_type=_grant_type_label(grant_type)).observe(elapsed)
        if grant_type == "code_chain":
            HANDOFFS.labels(result=_error_label(response), status=str(response.status_code)).inc()


def _authorized(request) -> bool | None:
    """True (serve), False (401), None (metrics turned off: 404)."""
    token = getattr(settings, "CHAIN_GRANT_METRICS_TOKEN", None)
    if not token:
        return None if getattr(settings, "CHAIN_GRANT_METRICS_REQUIRE_TOKEN", False) else True
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), str(token).encode())


def metrics_view(request):
    """The Prometheus exposition (text format), protected as the settings say."""
    if request.method not in ("GET", "HEAD"):
        response = HttpResponse(status=405)
        response["Allow"] = "GET, HEAD"
        return response
    allowed = _authorized(request)
    if allowed is None:
        return HttpResponseNotFound("metrics are disabled (set a metrics token)\n", content_type="text/plain")
    if not allowed:
        response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not AVAILABLE:
        return HttpResponse("prometheus-client is not installed\n", status=503, content_type="text/plain")
    response = HttpResponse(
        prometheus_client.generate_latest(registry()), content_type=prometheus_client.CONTENT_TYPE_LATEST
    )
    response["Cache-Control"] = "no-store"
    return response


def start_worker_metrics_server(**_):
    """Serve metrics from a Celery worker (``worker_ready``) when a port is configured.
    Returns prometheus-client's ``(server, thread)``, or None."""
    port = getattr(settings, "CHAIN_GRANT_WORKER_METRICS_PORT", None)
    if not (AVAILABLE and port):
        return None
    addr = getattr(settings, "CHAIN_GRANT_WORKER_METRICS_ADDR", "127.0.0.1")
    served = prometheus_client.start_http_server(int(port), addr=addr, registry=registry())
    logger.info("chain_grant worker metrics on %s:%s", addr, port)
    return served


try:  # optional dependency too
    from celery.signals import worker_ready
except ImportError:  # pragma: no cover
    pass
else:
    worker_ready.connect(start_worker_metrics_server, weak=False, dispatch_uid="chain_grant.metrics.worker")
