"""A resource server's settings: DOT (for its token cache and introspection), DRF, and
the IdP's introspection endpoint with this server's credentials (from the environment)."""

import os

SECRET_KEY = "remote-rs-test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "tests.remote_rs.urls"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "oauth2_provider", "rest_framework"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["RS_DATABASE"]}}
OAUTH2_PROVIDER = {  # DOT's resource-server settings: DOT caches each token until exp, at most 10 h
    "RESOURCE_SERVER_INTROSPECTION_URL": os.environ["RS_INTROSPECTION_URL"],  # https://idp.example/o/introspect/
    "RESOURCE_SERVER_INTROSPECTION_CREDENTIALS": (os.environ["RS_CLIENT_ID"], os.environ["RS_CLIENT_SECRET"]),
}
if os.environ.get("RS_KEEP_CLAIMS") == "1":  # the README's: one introspection per token, chain claims kept
    OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"] = "chain_grant.oauth.chain_required.ChainResourceValidator"
LOGGING = {  # errors (a 500's traceback) to stderr, which the test reads
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "ERROR"},
}
