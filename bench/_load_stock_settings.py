"""Settings of bench/load.py's stock DOT server: the same IdP settings and database, with
DOT as it ships (oauthlib's Server, DOT's validator, backend and views, Django's own
middleware) and no chain_grant installed."""

from _load_chain_settings import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app not in ("chain_grant", "idp_project")]  # noqa: F405
MIDDLEWARE = [m for m in MIDDLEWARE if m.startswith("django.")]  # noqa: F405
ROOT_URLCONF = "_load_stock_urls"
OAUTH2_PROVIDER = {
    **OAUTH2_PROVIDER,  # noqa: F405
    "OAUTH2_SERVER_CLASS": "oauthlib.openid.Server",
    "OAUTH2_VALIDATOR_CLASS": "oauth2_provider.oauth2_validators.OAuth2Validator",
    "OAUTH2_BACKEND_CLASS": "oauth2_provider.oauth2_backends.OAuthLibCore",
}
