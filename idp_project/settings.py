"""idp_project: an "existing IdP" built on django-oauth-toolkit with OIDC, and
chain_grant plugged in. Everything comes from the environment; the defaults need
no service at all (SQLite file and generated keys under var/).
"""

import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

from .keys import rsa_private_key_pem, secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("IDP_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or secret_key(VAR_DIR / "secret_key")
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
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "0")),
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
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

OIDC_KEY_PATH = Path(os.environ.get("OIDC_KEY_PATH", VAR_DIR / "oidc_rsa.pem"))

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
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token", "client_credentials", "code_chain"],
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

REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "chain_grant.api.error_handler",
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
CELERY_BEAT_SCHEDULE = {
    "chain-grant-expire-steps": {"task": "chain_grant.expire_steps", "schedule": 60.0},
    "chain-grant-purge-chains": {"task": "chain_grant.purge_chains", "schedule": crontab(hour=3, minute=17)},
    "dot-clear-expired-tokens": {"task": "chain_grant.clear_dot_tokens", "schedule": crontab(hour=3, minute=47)},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"chain_grant": {"handlers": ["console"], "level": os.environ.get("CHAIN_LOG_LEVEL", "INFO")}},
}
