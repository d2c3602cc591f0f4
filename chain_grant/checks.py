"""System checks for misconfiguration (ids ``chain_grant.E00x`` / ``W00x``)."""

import difflib
import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.urls import NoReverseMatch, Resolver404, resolve, reverse
from jwcrypto import jwk
from jwcrypto.common import JWException
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings

from .settings import DEFAULTS, FORBIDDEN_ALGORITHMS, chain_grant_settings

# The asymmetric JWS algorithms jwcrypto verifies: the default allow-list plus ES256K.
KNOWN_ALGORITHMS = {*DEFAULTS["ALLOWED_ALGORITHMS"], "ES256K"}


@checks.register()
def check_plugged_in(app_configs=None, **kwargs):
    from .server import ChainServer
    from .validators import ChainValidatorMixin

    found = []
    server = oauth2_settings.OAUTH2_SERVER_CLASS
    if not (isinstance(server, type) and issubclass(server, ChainServer)):
        found.append(
            checks.Error(
                "OAUTH2_PROVIDER['OAUTH2_SERVER_CLASS'] is not chain_grant.server.ChainServer (or a subclass).",
                hint="Set it to 'chain_grant.server.ChainServer'; without it code_chain is unsupported.",
                id="chain_grant.E001",
            )
        )
    validator = oauth2_settings.OAUTH2_VALIDATOR_CLASS
    if not (isinstance(validator, type) and issubclass(validator, ChainValidatorMixin)):
        found.append(
            checks.Error(
                "OAUTH2_PROVIDER['OAUTH2_VALIDATOR_CLASS'] does not include ChainValidatorMixin.",
                hint="Use chain_grant.validators.ChainOAuth2Validator, or "
                "class MyValidator(ChainValidatorMixin, YourValidator).",
                id="chain_grant.E002",
            )
        )
    from .backends import ChainOAuthLibCore

    backend = oauth2_settings.OAUTH2_BACKEND_CLASS
    if not (isinstance(backend, type) and issubclass(backend, ChainOAuthLibCore)):
        found.append(
            checks.Warning(
                "OAUTH2_PROVIDER['OAUTH2_BACKEND_CLASS'] drops repeated form parameters, so duplicated "
                "parameters are not refused (RFC 6749 §3.1).",
                hint="Set it to 'chain_grant.backends.ChainOAuthLibCore'.",
                id="chain_grant.W003",
            )
        )
    hidden = _grants_hidden_from_discovery()
    if hidden:
        found.append(
            checks.Warning(
                "OAUTH2_PROVIDER['OAUTH2_GRANT_TYPES_SUPPORTED'] leaves out grants the token endpoint "
                f"serves: {', '.join(hidden)}; discovery does not advertise them.",
                hint="Remove the setting (chain_grant adds code_chain to DOT's list itself) or list "
                "every grant the server serves.",
                id="chain_grant.W002",
            )
        )
    if isinstance(validator, type) and issubclass(validator, ChainValidatorMixin):
        mro = validator.__mro__
        if OAuth2Validator in mro and mro.index(OAuth2Validator) < mro.index(ChainValidatorMixin):
            found.append(
                checks.Error(
                    f"{validator.__qualname__} puts ChainValidatorMixin after OAuth2Validator in its MRO: "
                    "DOT's methods shadow the chain's and every hop fails.",
                    hint="Put the mixin first: class MyValidator(ChainValidatorMixin, MyOAuth2Validator).",
                    id="chain_grant.E007",
                )
            )
    found.extend(_check_mounted_views())
    return found


def _grants_hidden_from_discovery() -> list[str]:
    """Token-endpoint grants the server serves that an explicit OAUTH2_GRANT_TYPES_SUPPORTED
    leaves out (chain_grant's own grants are added to discovery anyway)."""
    if "OAUTH2_GRANT_TYPES_SUPPORTED" not in (getattr(settings, "OAUTH2_PROVIDER", None) or {}):
        return []
    try:
        server = oauth2_settings.OAUTH2_SERVER_CLASS(
            oauth2_settings.OAUTH2_VALIDATOR_CLASS(), **oauth2_settings.server_kwargs
        )
        served = set(server.grant_types)
    except Exception:  # noqa: BLE001 - E001/E002 report a server or validator that cannot be built
        return []
    from .oauth.views import rfc9700_gated_grants

    served -= rfc9700_gated_grants() | set(getattr(type(server), "chain_grant_types", ()))
    return sorted(served - set(oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED))


def _view_class(name: str):
    try:
        match = resolve(reverse(name))
    except (NoReverseMatch, Resolver404):
        return None
    return getattr(match.func, "view_class", match.func)


def _check_mounted_views() -> list:
    """W006: the IdP's authorize URL is served by a view that ignores code=. E008/W007: the
    review API is mounted but DRF is not an installed app, or its scopes are unknown."""
    from .oauth.views import AuthorizationView

    found: list[checks.CheckMessage] = []
    view = _view_class("oauth2_provider:authorize")
    if view is not None and not (isinstance(view, type) and issubclass(view, AuthorizationView)):
        found.append(
            checks.Warning(
                f"The authorize URL is served by {getattr(view, '__qualname__', view)}, not chain_grant's "
                "AuthorizationView: authorize with code=<previous> is ignored there and issues an unlinked code.",
                hint="Mount chain_grant.urls in place of oauth2_provider.urls (README, Plugging in).",
                id="chain_grant.W006",
            )
        )
    if _view_class("chain_grant_api:chain-list") is None:
        return found
    apps = [app for app in ("rest_framework", "drf_spectacular") if app not in settings.INSTALLED_APPS]
    if apps:
        found.append(
            checks.Error(
                f"chain_grant.api_urls is mounted but {' and '.join(map(repr, apps))} not in INSTALLED_APPS "
                "(the browsable pages and the API reference fail).",
                hint="pip install 'django-chain-grant[api]'; add rest_framework and drf_spectacular to INSTALLED_APPS.",
                id="chain_grant.E008",
            )
        )
        return found
    from .review.api import READ_SCOPE, REVOKE_SCOPE

    try:
        known = set(oauth2_settings.SCOPES_BACKEND_CLASS().get_all_scopes())
    except Exception:  # noqa: BLE001 - the IdP's scopes backend, whatever it needs
        return found
    missing = [scope for scope in (READ_SCOPE, REVOKE_SCOPE) if scope not in known]
    if missing:
        found.append(
            checks.Warning(
                f"The review API's scopes are not known to the scopes backend: {', '.join(missing)}; "
                "tokens for them are refused.",
                hint="Add them to OAUTH2_PROVIDER['SCOPES'] (README, Plugging in: the REST API).",
                id="chain_grant.W007",
            )
        )
    return found


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _strings(value) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)


def _absolute_urls(value) -> bool:
    return _strings(value) and all(urlsplit(v).scheme in ("https", "http") and bool(urlsplit(v).netloc) for v in value)


def _rate_limits(value) -> bool:
    def limit(v) -> bool:
        return v is None or (isinstance(v, list | tuple) and len(v) == 2 and all(_positive_int(n) for n in v))

    return isinstance(value, dict) and all(isinstance(k, str) and limit(v) for k, v in value.items())


def _bool(value) -> bool:
    return isinstance(value, bool)


def _cache_alias(value) -> bool:
    return isinstance(value, str) and value in getattr(settings, "CACHES", {"default": {}})


# Each CHAIN_GRANT setting: (its check's id, the rule, what the value must be). Every key of
# settings.DEFAULTS has a line (tests.test_settings_and_checks checks that), like
# django-cors-headers' checks of its settings.
def _private_key_pem(value) -> bool:
    if value == "":
        return True
    try:
        key = jwk.JWK.from_pem(value.encode() if isinstance(value, str) else value)
    except (TypeError, ValueError, AttributeError, JWException):
        return False
    return key.has_private and key.get("kty") in ("OKP", "EC", "RSA")


def _public_jwks(value) -> bool:
    if not isinstance(value, list):
        return False
    try:
        return all(
            isinstance(v, dict) and v.get("kty") in ("OKP", "EC", "RSA") and not jwk.JWK(**v).has_private for v in value
        )
    except (TypeError, ValueError, JWException):
        return False


SETTING_RULES = {
    "CODE_EXPIRE_SECONDS": ("chain_grant.E102", _positive_int, "a positive integer (seconds)"),
    "CODE_KEY": ("chain_grant.E103", lambda v: isinstance(v, str), "a string (empty: SECRET_KEY)"),
    "MAX_CHILDREN": ("chain_grant.E104", _positive_int, "a positive integer"),
    "MAX_DEPTH": ("chain_grant.E105", _positive_int, "a positive integer"),
    "MAX_PROOF_LIFETIME": ("chain_grant.E106", _positive_int, "a positive integer (seconds)"),
    "PROOF_CLOCK_SKEW": ("chain_grant.E107", _non_negative_int, "an integer >= 0 (seconds)"),
    "PROOF_MAX_BYTES": ("chain_grant.E108", _positive_int, "a positive integer (bytes)"),
    "ALLOWED_ALGORITHMS": ("chain_grant.E109", _strings, "a list of JWS algorithm names"),
    "PROOF_AUDIENCES": ("chain_grant.E110", _absolute_urls, "a list of absolute http(s) URLs"),
    "RELAXED_PROOFS": ("chain_grant.E111", _bool, "True or False"),
    "RETENTION_DAYS": ("chain_grant.E112", _positive_int, "a positive integer (days)"),
    "EXPIRE_BATCH_SIZE": ("chain_grant.E113", _positive_int, "a positive integer"),
    "PURGE_BATCH_SIZE": ("chain_grant.E114", _positive_int, "a positive integer"),
    "ON_DISABLE": ("chain_grant.E006", lambda v: v in ("revoke", "refuse"), '"revoke" or "refuse"'),
    "INTROSPECTION_RESOURCE_SERVERS": ("chain_grant.E115", _strings, "a list of client_ids"),
    "TRACK_PLAIN_CODES": ("chain_grant.E116", _bool, "True or False"),
    "RATE_LIMITS": ("chain_grant.E117", _rate_limits, "a dict of name -> [requests, seconds] or None"),
    "RATE_LIMIT_CACHE": ("chain_grant.E118", _cache_alias, "the alias of a cache in CACHES"),
    "ENABLE_FOR_ALL_CLIENTS": ("chain_grant.E119", _bool, "True or False"),
    "WALLET_STEP": ("chain_grant.E120", _bool, "True or False"),
    "WALLET_REQUEST_SECONDS": ("chain_grant.E121", _positive_int, "a positive integer (seconds)"),
    "WALLET_ID_TOKEN_LIFETIME": ("chain_grant.E122", _positive_int, "a positive integer (seconds)"),
    "RECORD_SIGNING_KEY": ("chain_grant.E123", _private_key_pem, "a PEM private key (Ed25519, EC or RSA) or empty"),
    "RECORD_VERIFY_KEYS": ("chain_grant.E124", _public_jwks, "a list of public JWK dicts"),
    "MAX_JOINS": ("chain_grant.E125", _positive_int, "a positive integer"),
    "CLIENT_ASSERTION_MAX_LIFETIME": ("chain_grant.E126", _positive_int, "a positive integer (seconds)"),
    "CLIENT_ASSERTION_ALGORITHMS": (
        "chain_grant.E127",
        lambda v: _strings(v) and bool(v) and not set(v) & FORBIDDEN_ALGORITHMS,
        "a non-empty list of asymmetric JWS algorithm names",
    ),
    "DPOP_ALGORITHMS": (
        "chain_grant.E128",
        lambda v: _strings(v) and bool(v) and not set(v) & FORBIDDEN_ALGORITHMS,
        "a non-empty list of asymmetric JWS algorithm names",
    ),
    "DPOP_PROOF_WINDOW": ("chain_grant.E129", _positive_int, "a positive integer (seconds)"),
    "DPOP_NONCE_SECONDS": ("chain_grant.E130", lambda v: v is None or _positive_int(v), "None or a positive integer"),
    "TOKEN_EXCHANGE_REQUIRE_ATH": ("chain_grant.E141", _bool, "True or False"),
    "RESOURCE_SERVER_CACHE": ("chain_grant.E140", _cache_alias, "the alias of a cache in CACHES"),
}


@checks.register()
def check_settings(app_configs=None, **kwargs):
    user = getattr(settings, "CHAIN_GRANT", {})
    if not isinstance(user, dict):
        return [checks.Error("settings.CHAIN_GRANT must be a dict.", id="chain_grant.E100")]
    found = []
    for key in user:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            found.append(
                checks.Error(
                    f"CHAIN_GRANT has an unknown key {key!r}: it is ignored.",
                    hint=f"Did you mean {close[0]!r}?" if close else "See the README's settings reference.",
                    id="chain_grant.E101",
                )
            )
    for name, (check_id, rule, expected) in SETTING_RULES.items():
        value = getattr(chain_grant_settings, name)
        if not rule(value):
            found.append(checks.Error(f"CHAIN_GRANT['{name}'] must be {expected}, not {value!r}.", id=check_id))
    if _strings(chain_grant_settings.ALLOWED_ALGORITHMS):
        algorithms = set(chain_grant_settings.ALLOWED_ALGORITHMS)
        unknown = algorithms - KNOWN_ALGORITHMS - FORBIDDEN_ALGORITHMS
        unsafe = sorted(algorithms & FORBIDDEN_ALGORITHMS) + sorted(unknown)
        if unsafe:
            found.append(
                checks.Error(
                    f"CHAIN_GRANT['ALLOWED_ALGORITHMS'] has unsafe or unknown algorithms: {', '.join(unsafe)}.",
                    hint="Only asymmetric JWS algorithms; never 'none' or HS*.",
                    id="chain_grant.E003",
                )
            )
        if not algorithms:
            found.append(
                checks.Error(
                    "CHAIN_GRANT['ALLOWED_ALGORITHMS'] is empty: no agent proof can ever verify.",
                    id="chain_grant.E003",
                )
            )
    if chain_grant_settings.RELAXED_PROOFS:
        found.append(
            checks.Warning(
                "CHAIN_GRANT['RELAXED_PROOFS'] is on: self-asserted agent keys are accepted and "
                "aud/jti/c_hash are optional.",
                hint="Only for clients written against the PoC; never in production.",
                id="chain_grant.W001",
            )
        )
    return found


@checks.register()
def check_log_redaction(app_configs=None, **kwargs):
    """W005: a handler that records of oauthlib, DOT, runserver, django.request or the root
    logger reach (as configured now, propagation included) has no RedactFilter."""
    from .redaction import CREDENTIAL_LOGGERS, unredacted_handlers

    found = []
    for handler, names in unredacted_handlers(CREDENTIAL_LOGGERS).items():
        if handler is logging.lastResort:
            label = "logging.lastResort (no handler configured)"
        else:
            label = f"'{handler.name}' {handler!r}" if handler.name else repr(handler)
        found.append(
            checks.Warning(
                f"Log handler {label} has no chain_grant.redaction.RedactFilter; records of "
                f"{', '.join(names)} reach it unredacted (oauthlib and DOT log codes and tokens at DEBUG, "
                "request lines carry code=, a 500's traceback can carry any of them).",
                hint='Add "filters": ["redact"] to every handler in LOGGING, with '
                'LOGGING["filters"] = {"redact": {"()": "chain_grant.redaction.RedactFilter"}}, and give '
                "the root logger such a handler (README, Deploying: Logs).",
                id="chain_grant.W005",
            )
        )
    return found


@checks.register(checks.Tags.security, deploy=True)
def check_deploy(app_configs=None, **kwargs):
    found = []
    if not chain_grant_settings.PROOF_AUDIENCES and not oauth2_settings.OIDC_ISS_ENDPOINT:
        found.append(
            checks.Warning(
                "Proof audiences come from the request's Host header: neither CHAIN_GRANT['PROOF_AUDIENCES'] "
                "nor OAUTH2_PROVIDER['OIDC_ISS_ENDPOINT'] is set.",
                hint="Set OIDC_ISS_ENDPOINT (the issuer URL) in production.",
                id="chain_grant.W004",
            )
        )
    if chain_grant_settings.RELAXED_PROOFS and not settings.DEBUG:
        found.append(
            checks.Error(
                "CHAIN_GRANT['RELAXED_PROOFS'] is on in a deployment.",
                hint="Turn it off: it accepts self-asserted keys and replayable proofs.",
                id="chain_grant.E005",
            )
        )
    return found
