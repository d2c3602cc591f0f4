"""System checks for misconfiguration (ids ``chain_grant.E00x`` / ``W00x``)."""

import logging

from django.conf import settings
from django.core import checks
from oauth2_provider.settings import oauth2_settings

from .oauth.grant import GRANT_TYPE
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
    if GRANT_TYPE not in oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED:
        found.append(
            checks.Warning(
                "code_chain is not listed in OAUTH2_PROVIDER['OAUTH2_GRANT_TYPES_SUPPORTED'].",
                hint="Add it so discovery advertises the grant.",
                id="chain_grant.W002",
            )
        )
    return found


@checks.register()
def check_settings(app_configs=None, **kwargs):
    found = []
    algorithms = set(chain_grant_settings.ALLOWED_ALGORITHMS)
    unsafe = sorted(algorithms & FORBIDDEN_ALGORITHMS) + sorted(algorithms - KNOWN_ALGORITHMS - FORBIDDEN_ALGORITHMS)
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
    for name in ("MAX_CHILDREN", "MAX_DEPTH", "CODE_EXPIRE_SECONDS", "MAX_PROOF_LIFETIME", "PROOF_MAX_BYTES"):
        value = getattr(chain_grant_settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            found.append(checks.Error(f"CHAIN_GRANT['{name}'] must be a positive integer.", id="chain_grant.E004"))
    if chain_grant_settings.ON_DISABLE not in ("revoke", "refuse"):
        found.append(checks.Error('CHAIN_GRANT["ON_DISABLE"] must be "revoke" or "refuse".', id="chain_grant.E006"))
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
