"""Corp's IdP: a typical django-oauth-toolkit deployment (``before``: without chain_grant).

Its own validator (claims, scope and client policies), an OIDC implicit client,
DOT's ``/o/`` prefix, DOT's grant list left alone, a LOGGING of its own. ``after`` is the same
IdP after following the README's "Plug it into your DOT IdP" literally (each line
it adds or changes says ``# chain_grant``); tests/test_dot_idp.py runs the IdP's own end-to-end checks against both and
compares what they answered. The module paths below are relative (``__package__``)
so the two copies differ only in what the README changes.
"""

import os

import dj_database_url

SECRET_KEY = "corp-idp-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "oauth2_provider",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = f"{__package__}.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL") or "sqlite:///:memory:")}
DATABASES["default"]["TEST"] = {"NAME": f"test_corp_idp_{__package__.rsplit('.', 1)[-1]}"}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": ":memory:"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"
LOGIN_URL = "/accounts/login/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # tests only

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": open(os.environ["CORP_OIDC_KEY"]).read(),  # noqa: SIM115 (a key made per test run)
    "PKCE_REQUIRED": True,
    "OAUTH2_VALIDATOR_CLASS": f"{__package__}.validators.CorpValidator",
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your name and department",
        "email": "Your e-mail address",
        "read": "Read your documents",
        "write": "Edit your documents",
        "admin": "Administer Corp",
    },
    "DEFAULT_SCOPES": ["read"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
