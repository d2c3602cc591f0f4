"""idp_project: an "existing IdP" built on django-oauth-toolkit with OIDC, and
chain_grant plugged in. Everything comes from the environment; the defaults need
no service at all (SQLite file and generated keys under var/).

``IDP_PRODUCTION=1`` turns on the production profile (docs/deploy.md): DEBUG must be
off, ``SECRET_KEY`` (or ``SECRET_KEY_FILE``), ``ALLOWED_HOSTS``, ``OIDC_ISSUER`` and a
mounted ``OIDC_KEY_PATH`` are required (nothing is generated), cookies are secure,
HSTS and the TLS redirect are on, and ``/metrics`` wants ``METRICS_TOKEN``; then
``manage.py check --deploy --fail-level WARNING`` is clean. Without the flag every
default below is what it always was.
"""

import json
import logging
import os
import time
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from .keys import rsa_private_key_pem, secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("IDP_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def env_secret(name: str) -> str | None:
    """``NAME`` or the content of the file ``NAME_FILE`` (a mounted secret)."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read ({exc.strerror})") from None
    return None


PRODUCTION = env_bool("IDP_PRODUCTION", False)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY")
if PRODUCTION:
    _missing = [name for name in ("ALLOWED_HOSTS", "OIDC_ISSUER", "OIDC_KEY_PATH") if not os.environ.get(name)]
    if not SECRET_KEY:
        _missing.insert(0, "SECRET_KEY (or SECRET_KEY_FILE)")
    if _missing:
        raise ImproperlyConfigured("IDP_PRODUCTION=1 needs " + ", ".join(_missing))
    if DEBUG:
        raise ImproperlyConfigured("IDP_PRODUCTION=1 with DEBUG on: unset DEBUG")
SECRET_KEY = SECRET_KEY or secret_key(VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "oauth2_provider",
    "rest_framework",
    "drf_spectacular",
    "chain_grant",
    "idp_project",
]

MIDDLEWARE = [
    # /healthz, /readyz, /metrics first: probes call a pod by IP over plain HTTP.
    "idp_project.health.ProbeMiddleware",
    # A 400 (not Django's 500) for a Content-Type whose charset Django cannot decode with;
    # before CsrfViewMiddleware, which reads the form. See chain_grant.middleware.
    "chain_grant.middleware.RequestGuardMiddleware",
    # Times the token endpoint and counts code_chain hand-offs (no-op without prometheus-client).
    "chain_grant.metrics.TokenMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "idp_project.urls"
WSGI_APPLICATION = "idp_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "idp_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    # parse(), not config(): an empty DATABASE_URL means the default, not a crash.
    "default": dj_database_url.parse(
        env_secret("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60" if PRODUCTION else "0")),
        conn_health_checks=PRODUCTION,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL + a busy timeout: the dev server, a worker and scripts share one file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

OIDC_KEY_PATH = Path(os.environ.get("OIDC_KEY_PATH", VAR_DIR / "oidc_rsa.pem"))
if PRODUCTION and not OIDC_KEY_PATH.is_file():
    # Every replica must sign with the same key: mount it (Secret, credential), never generate one.
    raise ImproperlyConfigured(f"IDP_PRODUCTION=1: OIDC_KEY_PATH={OIDC_KEY_PATH} is not a file")

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": rsa_private_key_pem(OIDC_KEY_PATH),
    "OIDC_ISS_ENDPOINT": os.environ.get("OIDC_ISSUER", ""),
    "OAUTH2_SERVER_CLASS": "chain_grant.server.ChainServer",
    "OAUTH2_VALIDATOR_CLASS": "chain_grant.validators.ChainOAuth2Validator",
    "OAUTH2_BACKEND_CLASS": "chain_grant.backends.ChainOAuthLibCore",
    "SCOPES": {
        "openid": "OpenID Connect sign-in",
        "profile": "Your name and username",
        "email": "Your email address",
        "read": "Read your resources",
        "write": "Change your resources",
        "introspection": "Introspect tokens (resource servers)",
        "chains:read": "Review authorization code chains (staff)",
        "chains:revoke": "Revoke steps of authorization code chains (staff)",
    },
    "DEFAULT_SCOPES": ["openid"],
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REFRESH_TOKEN_EXPIRE_SECONDS": 14 * 24 * 3600,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 3600,
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OIDC_RESPONSE_TYPES_SUPPORTED": ["code"],
    # RFC 9700 behaviour gates: adopt the compliant behaviour now.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
}

if os.environ.get("OAUTH2_CODE_EXPIRE_SECONDS"):
    # Lifetime of codes from the authorize endpoint (DOT's default: 60 s); chained codes: CHAIN_CODE_EXPIRE_SECONDS.
    OAUTH2_PROVIDER["AUTHORIZATION_CODE_EXPIRE_SECONDS"] = int(os.environ["OAUTH2_CODE_EXPIRE_SECONDS"])

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "chain_grant review API",
    "DESCRIPTION": "Find, read, verify, export and revoke authorization code chains.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "OAUTH2_FLOWS": ["authorizationCode"],
    "OAUTH2_AUTHORIZATION_URL": "/oauth/authorize/",
    "OAUTH2_TOKEN_URL": "/oauth/token/",
    "OAUTH2_REFRESH_URL": "/oauth/token/",
    "OAUTH2_SCOPES": {"chains:read": "Review chains (staff)", "chains:revoke": "Revoke steps (staff)"},
}

CHAIN_GRANT = {
    "RETENTION_DAYS": int(os.environ.get("CHAIN_RETENTION_DAYS", "90")),
    "CODE_EXPIRE_SECONDS": int(os.environ.get("CHAIN_CODE_EXPIRE_SECONDS", "600")),
    "MAX_CHILDREN": int(os.environ.get("CHAIN_MAX_CHILDREN", "3")),
    "MAX_DEPTH": int(os.environ.get("CHAIN_MAX_DEPTH", "16")),
    "RELAXED_PROOFS": env_bool("CHAIN_RELAXED_PROOFS", False),
}
if os.environ.get("CHAIN_PROOF_AUDIENCES"):
    CHAIN_GRANT["PROOF_AUDIENCES"] = env_list("CHAIN_PROOF_AUDIENCES", "")

# Production profile (IDP_PRODUCTION=1): TLS is terminated by the proxy in front
# (nginx, the Ingress), which sets X-Forwarded-Proto; deploy/ configures both.
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # RFC 9700 §2.1: https redirect URIs only (add "http" for RFC 8252 loopback clients;
    # DOT's check oauth2_provider.W008 then says so).
    OAUTH2_PROVIDER["ALLOWED_REDIRECT_URI_SCHEMES"] = env_list("OAUTH2_REDIRECT_URI_SCHEMES", "https")
    if not SECURE_HSTS_PRELOAD:
        # Preloading is a commitment made by submitting the domain (hstspreload.org), not a
        # default; without it security.W021 only says the header lacks "preload".
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Cache: Redis when CACHE_URL (or REDIS_URL) is set, failing open (idp_project.health.
# FailSafeRedisCache): it is only ever a cache, the IdP is correct with it cold or down.
# Otherwise Django's default per-process memory cache. Sessions, pending requests,
# jti and nonces live in the database, never in the cache.
_CACHE_URL = os.environ.get("CACHE_URL") or os.environ.get("REDIS_URL")
if _CACHE_URL and _CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "idp_project.health.FailSafeRedisCache",
            "LOCATION": _CACHE_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "idp"),
            "TIMEOUT": int(os.environ.get("CACHE_TIMEOUT", "300")),
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
READYZ_REQUIRE_REDIS = env_bool("READYZ_REQUIRE_REDIS", False)

# Prometheus (chain_grant.metrics): /metrics wants "Authorization: Bearer $METRICS_TOKEN"
# when it is set; in production it is off (404) until it is set.
CHAIN_GRANT_METRICS_TOKEN = env_secret("METRICS_TOKEN")
CHAIN_GRANT_METRICS_REQUIRE_TOKEN = PRODUCTION
# A Celery worker serves its own metrics (expired and purged steps) on this port when set.
CHAIN_GRANT_WORKER_METRICS_PORT = int(os.environ.get("CELERY_METRICS_PORT", "0")) or None
CHAIN_GRANT_WORKER_METRICS_ADDR = os.environ.get("CELERY_METRICS_ADDR", "127.0.0.1")

# Celery: housekeeping (chain_grant.tasks) and DOT's clear_expired. Redis when
# CELERY_BROKER_URL/REDIS_URL is set; otherwise kombu's filesystem transport under
# var/, so `make run` needs no service. Nothing on the request path enqueues: the
# IdP serves and refuses stale codes with the broker down.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue = VAR_DIR / "celery" / "queue"
    for _folder in (_queue, VAR_DIR / "celery" / "control"):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
else:
    # Unacknowledged tasks (a killed worker) come back after this many seconds.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "600"))}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The worker imports chain_grant.metrics: its signal receivers count expired/purged steps.
CELERY_IMPORTS = ("chain_grant.metrics",)
CELERY_BEAT_SCHEDULE = {
    "chain-grant-expire-steps": {
        "task": "chain_grant.expire_steps",
        "schedule": float(os.environ.get("CHAIN_EXPIRE_INTERVAL", "60")),
    },
    "chain-grant-purge-chains": {"task": "chain_grant.purge_chains", "schedule": crontab(hour=3, minute=17)},
    "dot-clear-expired-tokens": {"task": "chain_grant.clear_dot_tokens", "schedule": crontab(hour=3, minute=47)},
}


def logging_config(log_format: str = "", production: bool = False) -> dict:
    """LOGGING: plain text (the default) or one JSON object per line (``LOG_FORMAT=json``).

    Codes and tokens never reach a log, at any level: every handler carries
    chain_grant.redaction.RedactFilter (a filter on a handler also sees the records that
    propagate to it; a logger's filter does not). oauthlib and DOT log grants, token
    responses and requests at DEBUG (``LOG_LEVEL=DEBUG``); runserver's request lines
    (django.server) print authorize URLs, which carry code=<previous> in a consent step; a
    500's traceback (django.request) can carry them too, and keeps its (redacted) text.
    ``manage.py check`` warns (chain_grant.W005) when a handler lacks the filter.
    """
    level = os.environ.get("LOG_LEVEL", "INFO" if log_format == "json" else "WARNING")
    chain_level = os.environ.get("CHAIN_LOG_LEVEL", "INFO")
    redact = {"redact": {"()": "chain_grant.redaction.RedactFilter"}}
    # SQL is never logged, even with DEBUG on and LOG_LEVEL=DEBUG: its parameters (token
    # values) cannot be told from other values.
    sql = {"django.db.backends": {"level": "INFO"}}
    if log_format == "json":
        return {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": redact,
            "formatters": {"json": {"()": "idp_project.settings.JsonFormatter"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]}},
            # oauthlib, oauth2_provider, celery... propagate here.
            "root": {"handlers": ["console"], "level": level},
            "loggers": {
                "chain_grant": {"level": chain_level},
                # Django's own handlers would print a second, plain-text copy.
                "django": {"handlers": [], "propagate": True},
                "django.server": {"handlers": [], "propagate": True},
                **sql,
            },
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": redact,
        "formatters": {
            "django.server": {
                "()": "django.utils.log.ServerFormatter",
                "format": "[{server_time}] {message}",
                "style": "{",
            },
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "filters": ["redact"]},
            "django.server": {"class": "logging.StreamHandler", "formatter": "django.server", "filters": ["redact"]},
        },
        # oauthlib, oauth2_provider, celery... propagate here (without a root handler,
        # their warnings would reach logging.lastResort, unredacted).
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "chain_grant": {"handlers": ["console"], "level": chain_level, "propagate": False},
            "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
            # Django's default handlers (console with DEBUG on, mail_admins) redact nothing.
            # Production: 500s and security events (e.g. DisallowedHost) to stderr, where
            # the process manager collects them, with DEBUG off.
            "django": {
                "handlers": ["console"] if production else [],
                "level": os.environ.get("DJANGO_LOG_LEVEL", "ERROR" if production else "INFO"),
                "propagate": not production,
            },
            **sql,
        },
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json): time (UTC), level, logger, message, exc, stack.

    ``exc`` is ``record.exc_text`` when set -- RedactFilter renders the traceback there,
    redacted -- as logging.Formatter does; never a second, unredacted rendering of exc_info.
    """

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


LOGGING = logging_config(os.environ.get("LOG_FORMAT", "").strip().lower(), PRODUCTION)
