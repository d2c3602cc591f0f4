"""Settings for an "existing IdP": the test settings, but with the IdP's own
validator (``AcmeChainValidator``), chain_grant mounted under DOT's default
``/o/`` prefix, and (on PostgreSQL or any server database) a test database of its
own so a run never touches the main run's ``test_<NAME>`` database.

Used by ``tests/test_existing_idp.py``, which runs ``tests/existing_idp/check_*.py``
in a separate pytest process: DOT's settings, the validator class, the server
and the URLconf are process-wide, so two IdP configurations cannot share one.
"""

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "tests.existing_idp.urls"

OAUTH2_PROVIDER = {
    **OAUTH2_PROVIDER,  # noqa: F405
    "OAUTH2_VALIDATOR_CLASS": "tests.existing_idp.validators.AcmeChainValidator",
    # Derive the issuer from the URLconf (http://testserver/o), whatever OIDC_ISSUER says.
    "OIDC_ISS_ENDPOINT": "",
    # Known to DOT, so only AcmeValidator.validate_scopes can be what refuses it.
    "SCOPES": {**OAUTH2_PROVIDER["SCOPES"], "forbidden": "Something Acme never grants"},  # noqa: F405
}

if not DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES = {"default": {**DATABASES["default"], "TEST": {"NAME": "test_chain_existing_idp"}}}  # noqa: F405
