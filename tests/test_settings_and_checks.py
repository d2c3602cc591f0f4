"""chain_grant's settings: its system checks, one misconfiguration at a time (ids
chain_grant.E00x/W00x), and what the switches do at the endpoints (WALLET_STEP,
ENABLE_FOR_ALL_CLIENTS through chain_grant.core.policy.client_may_chain and a real hop).

The ``settings`` fixture fires ``setting_changed``; DOT's ``oauth2_settings`` and
``chain_grant_settings`` both reload on it, and everything is restored afterwards.
"""

from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.core import checks as django_checks
from jwcrypto import jwk
from oauth2_provider.models import get_application_model
from oauth2_provider.oauth2_validators import OAuth2Validator

from chain_grant import checks
from chain_grant.core import lifecycle
from chain_grant.core.policy import chain_client_of, client_may_chain
from chain_grant.models import ChainClient, ChainedGrant, WalletRequest
from chain_grant.server import ChainServer
from chain_grant.settings import DEFAULTS
from chain_grant.validators import ChainValidatorMixin
from tests.helpers import REDIRECT_URI, Flow, assert_error


class MyChainValidator(ChainValidatorMixin, OAuth2Validator):
    """An IdP's own validator with the mixin (what the README recommends)."""


class MyServer(ChainServer):
    pass


def ids(messages):
    return [m.id for m in messages]


def chain_ids(messages):
    return sorted(m.id for m in messages if m.id and m.id.startswith("chain_grant."))


@pytest.fixture
def oauth2(settings):
    def override(**values):
        settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, **values}

    return override


# --- the project as configured --------------------------------------------------------


def test_project_has_no_chain_grant_errors(settings):
    messages = django_checks.run_checks(include_deployment_checks=True)
    found = [m for m in messages if m.id and m.id.startswith("chain_grant.")]
    assert [m for m in found if m.is_serious()] == []
    assert "chain_grant.W002" not in ids(found)  # the project advertises code_chain
    relaxed = settings.CHAIN_GRANT.get("RELAXED_PROOFS", False)
    assert ("chain_grant.W001" in ids(found)) == bool(relaxed)


def test_each_check_function_is_clean_with_the_project_settings(settings, chain_settings):
    chain_settings(RELAXED_PROOFS=False)
    assert checks.check_plugged_in() == []
    assert checks.check_settings() == []
    assert [c.id for c in checks.check_deploy()] == ["chain_grant.W004"]  # issuer from Host: warn


def test_deploy_is_clean_with_a_fixed_issuer(settings):
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": "https://idp.example/oauth"}
    assert checks.check_deploy() == []


def test_proof_audiences_also_silence_w004(settings, chain_settings):
    chain_settings(PROOF_AUDIENCES=["https://idp.example/oauth"])
    assert checks.check_deploy() == []


def test_w003_backend_that_drops_duplicates(settings):
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OAUTH2_BACKEND_CLASS": "oauth2_provider.oauth2_backends.OAuthLibCore",
    }
    assert [c.id for c in checks.check_plugged_in()] == ["chain_grant.W003"]


def test_checks_are_registered():
    registered = django_checks.registry.registry.get_checks(include_deployment_checks=True)
    assert {checks.check_plugged_in, checks.check_settings, checks.check_deploy} <= set(registered)
    # the deploy check only runs with --deploy
    assert checks.check_deploy not in django_checks.registry.registry.get_checks()
    assert checks.check_plugged_in in django_checks.registry.registry.get_checks()


# --- E001 / E002 / W002: plugged into DOT ---------------------------------------------


@pytest.mark.parametrize(
    "server_class",
    ["oauthlib.openid.Server", "oauthlib.oauth2.Server", "oauth2_provider.oauth2_validators.OAuth2Validator"],
)
def test_e001_server_class_not_chain_server(oauth2, server_class):
    oauth2(OAUTH2_SERVER_CLASS=server_class)
    messages = checks.check_plugged_in()
    assert ids(messages) == ["chain_grant.E001"]
    assert messages[0].level == django_checks.ERROR
    assert "ChainServer" in messages[0].msg


def test_e001_default_server_when_unset(settings):
    # No OAUTH2_SERVER_CLASS: DOT falls back to its OIDC server, which is not ChainServer.
    provider = dict(settings.OAUTH2_PROVIDER)
    del provider["OAUTH2_SERVER_CLASS"]
    settings.OAUTH2_PROVIDER = provider
    assert "chain_grant.E001" in ids(checks.check_plugged_in())


def test_a_chain_server_subclass_is_fine(oauth2):
    oauth2(OAUTH2_SERVER_CLASS=f"{__name__}.MyServer")
    assert checks.check_plugged_in() == []


def test_e002_validator_without_mixin(oauth2):
    oauth2(OAUTH2_VALIDATOR_CLASS="oauth2_provider.oauth2_validators.OAuth2Validator")
    messages = checks.check_plugged_in()
    assert ids(messages) == ["chain_grant.E002"]
    assert messages[0].level == django_checks.ERROR
    assert "ChainValidatorMixin" in messages[0].msg


def test_a_validator_with_the_mixin_is_fine(oauth2):
    oauth2(OAUTH2_VALIDATOR_CLASS=f"{__name__}.MyChainValidator")
    assert checks.check_plugged_in() == []


def test_e001_and_e002_together(oauth2):
    oauth2(
        OAUTH2_SERVER_CLASS="oauthlib.openid.Server",
        OAUTH2_VALIDATOR_CLASS="oauth2_provider.oauth2_validators.OAuth2Validator",
    )
    assert ids(checks.check_plugged_in()) == ["chain_grant.E001", "chain_grant.E002"]


def test_w002_an_explicit_grant_list_that_hides_a_served_grant(oauth2):
    oauth2(OAUTH2_GRANT_TYPES_SUPPORTED=["authorization_code", "refresh_token"])
    messages = checks.check_plugged_in()
    assert ids(messages) == ["chain_grant.W002"]
    assert messages[0].level == django_checks.WARNING and not messages[0].is_serious()
    # the project's RFC 9700 gate refuses password: only what the server really serves is named
    assert "client_credentials" in messages[0].msg and "device_code" in messages[0].msg
    assert "password" not in messages[0].msg and "code_chain" not in messages[0].msg


def test_w002_not_without_the_setting_nor_with_every_served_grant(settings, oauth2):
    served = [
        "authorization_code",
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
    ]
    oauth2(OAUTH2_GRANT_TYPES_SUPPORTED=served)  # code_chain need not be restated
    assert checks.check_plugged_in() == []
    provider = dict(settings.OAUTH2_PROVIDER)
    provider.pop("OAUTH2_GRANT_TYPES_SUPPORTED")
    settings.OAUTH2_PROVIDER = provider
    assert checks.check_plugged_in() == []


def test_plugged_in_checks_through_run_checks(oauth2):
    oauth2(OAUTH2_SERVER_CLASS="oauthlib.openid.Server", OAUTH2_GRANT_TYPES_SUPPORTED=["authorization_code"])
    found = chain_ids(django_checks.run_checks())
    assert found == ["chain_grant.E001", "chain_grant.W002"]


class AcmeValidator(OAuth2Validator):
    """An IdP's validator adding claims."""


class MixinLast(AcmeValidator, ChainValidatorMixin):
    """The likely mistake: the mixin after the IdP's validator (every hop would fail)."""


class MixinFirst(ChainValidatorMixin, AcmeValidator):
    pass


def test_e007_mixin_after_the_idps_validator(oauth2):
    oauth2(OAUTH2_VALIDATOR_CLASS=f"{__name__}.MixinLast")
    messages = checks.check_plugged_in()
    assert ids(messages) == ["chain_grant.E007"]
    assert messages[0].is_serious() and "MixinLast" in messages[0].msg
    oauth2(OAUTH2_VALIDATOR_CLASS=f"{__name__}.MixinFirst")
    assert checks.check_plugged_in() == []


def test_w006_authorize_served_by_dots_view(settings):
    settings.ROOT_URLCONF = "tests.urls_dot_authorize"
    messages = checks.check_plugged_in()
    assert ids(messages) == ["chain_grant.W006"]
    assert "code=" in messages[0].msg and not messages[0].is_serious()


def test_e008_api_mounted_without_rest_framework(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "rest_framework"]
    messages = checks.check_plugged_in()
    assert ids(messages) == ["chain_grant.E008"] and messages[0].is_serious()


def test_w007_api_scopes_unknown_to_the_scopes_backend(oauth2, settings):
    scopes = {k: v for k, v in settings.OAUTH2_PROVIDER["SCOPES"].items() if not k.startswith("chains:")}
    oauth2(SCOPES=scopes)
    messages = checks.check_plugged_in()
    assert ids(messages) == ["chain_grant.W007"]
    assert "chains:read" in messages[0].msg and "chains:revoke" in messages[0].msg


def test_no_api_checks_when_the_api_is_not_mounted(settings, oauth2):
    settings.ROOT_URLCONF = "tests.urls_dot_authorize"
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "rest_framework"]
    assert "chain_grant.E008" not in ids(checks.check_plugged_in())


# --- E003 / E004 / W001: CHAIN_GRANT values -------------------------------------------


@pytest.mark.parametrize("unsafe", ["HS256", "HS384", "HS512", "none", "RS1", "XYZ", "NONE"])
def test_e003_unsafe_or_unknown_algorithm(chain_settings, unsafe):
    chain_settings(ALLOWED_ALGORITHMS=["ES256", unsafe])
    messages = checks.check_settings()
    assert ids(messages) == ["chain_grant.E003"]
    assert messages[0].level == django_checks.ERROR
    assert unsafe in messages[0].msg
    assert "ES256" not in messages[0].msg


def test_e003_lists_every_unsafe_algorithm(chain_settings):
    chain_settings(ALLOWED_ALGORITHMS=["none", "HS256", "ES256", "bogus"])
    [message] = checks.check_settings()
    assert message.id == "chain_grant.E003"
    assert "none" in message.msg and "HS256" in message.msg and "bogus" in message.msg


def test_safe_algorithms_pass(chain_settings):
    chain_settings(ALLOWED_ALGORITHMS=["ES256", "ES256K", "EdDSA"])
    assert checks.check_settings() == []
    chain_settings(ALLOWED_ALGORITHMS=DEFAULTS["ALLOWED_ALGORITHMS"])
    assert checks.check_settings() == []


# One wrong value per setting: (a bad value, a good one other than the default).
_RECORD_KEY = jwk.JWK.generate(kty="OKP", crv="Ed25519")
_RECORD_KEY_PEM = _RECORD_KEY.export_to_pem(private_key=True, password=None).decode()
BAD_AND_GOOD = {
    "CODE_EXPIRE_SECONDS": (0, 60),
    "CODE_KEY": (None, "k" * 32),
    "MAX_CHILDREN": ("3", 1),
    "MAX_DEPTH": (-5, 1),
    "MAX_PROOF_LIFETIME": (2.5, 60),
    "PROOF_CLOCK_SKEW": (-1, 0),
    "PROOF_MAX_BYTES": (True, 4096),
    "ALLOWED_ALGORITHMS": ("ES256", ["ES256"]),
    "PROOF_AUDIENCES": ("https://idp.example/oauth", ["https://idp.example/oauth"]),
    "RELAXED_PROOFS": ("yes", True),
    "RETENTION_DAYS": (0, 7),
    "EXPIRE_BATCH_SIZE": (None, 10),
    "PURGE_BATCH_SIZE": ("200", 10),
    "ON_DISABLE": ("delete", "refuse"),
    "INTROSPECTION_RESOURCE_SERVERS": ("rs-client", ["rs-client"]),
    "TRACK_PLAIN_CODES": (1, True),
    "RATE_LIMITS": ({"wallet_request": [300]}, {"wallet_request": None, "chain_authorize": [10, 60]}),
    "RATE_LIMIT_CACHE": ("nowhere", "default"),
    "ENABLE_FOR_ALL_CLIENTS": ("false", True),
    "WALLET_STEP": (0, False),
    "WALLET_REQUEST_SECONDS": (0, 30),
    "WALLET_ID_TOKEN_LIFETIME": ("600", 60),
    "RECORD_SIGNING_KEY": ("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----", _RECORD_KEY_PEM),
    "RECORD_VERIFY_KEYS": (
        [_RECORD_KEY.export(as_dict=True, private_key=True)],
        [_RECORD_KEY.export_public(as_dict=True)],
    ),
    "MAX_JOINS": (0, 2),
    "CLIENT_ASSERTION_MAX_LIFETIME": (-1, 60),
    "CLIENT_ASSERTION_ALGORITHMS": (["HS256"], ["ES256"]),
    "DPOP_ALGORITHMS": ([], ["EdDSA"]),
    "DPOP_PROOF_WINDOW": (0, 30),
    "DPOP_NONCE_SECONDS": ("60", 60),
    "TOKEN_EXCHANGE_REQUIRE_ATH": ("yes", False),
    "RESOURCE_SERVER_CACHE": ("nowhere", "default"),
}


def test_every_setting_has_a_type_check_and_a_case_here():
    assert set(checks.SETTING_RULES) == set(DEFAULTS) == set(BAD_AND_GOOD)
    check_ids = [rule[0] for rule in checks.SETTING_RULES.values()]
    assert len(set(check_ids)) == len(check_ids)  # each setting its own id


@pytest.mark.parametrize("name", sorted(BAD_AND_GOOD))
def test_a_wrong_type_is_an_error_with_that_settings_id(chain_settings, name):
    bad, good = BAD_AND_GOOD[name]
    chain_settings(**{name: bad})
    messages = [m for m in checks.check_settings() if m.id != "chain_grant.W001"]
    assert ids(messages) == [checks.SETTING_RULES[name][0]]
    assert name in messages[0].msg and messages[0].is_serious()
    chain_settings(**{name: good})
    assert [m for m in checks.check_settings() if m.id != "chain_grant.W001"] == []


def test_one_error_per_bad_setting(chain_settings):
    chain_settings(MAX_CHILDREN=0, MAX_DEPTH=-5)
    messages = checks.check_settings()
    assert ids(messages) == ["chain_grant.E104", "chain_grant.E105"]


def test_proof_audiences_must_be_absolute_urls(chain_settings):
    for bad in (["/oauth"], ["idp.example"], ["ftp://idp.example"], [""], [None]):
        chain_settings(PROOF_AUDIENCES=bad)
        assert ids(checks.check_settings()) == ["chain_grant.E110"], bad


def test_a_string_audience_is_not_a_list_of_characters(chain_settings, flow, alice, planner):
    """PROOF_AUDIENCES = "https://idp" (a str): E110, and a proof with aud="h" is still refused."""
    chain_settings(PROOF_AUDIENCES="https://idp")
    assert "chain_grant.E110" in ids(checks.check_settings())
    code, _ = flow.authorize(alice, scope="openid read")
    assert_error(flow.hop(code, planner.proof(code, aud="h")), 400, "invalid_grant")
    assert flow.hop(code, planner.proof(code, aud="https://idp")).status_code == 200


def test_unknown_keys_are_errors_with_a_suggestion(settings):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "RELAXED_PROFS": True, "COLOUR": "blue"}
    messages = [m for m in checks.check_settings() if m.id == "chain_grant.E101"]
    assert len(messages) == 2 and messages[0].is_serious()
    assert "RELAXED_PROFS" in messages[0].msg and "RELAXED_PROOFS" in messages[0].hint
    assert "COLOUR" in messages[1].msg


def test_chain_grant_not_a_dict(settings):
    settings.CHAIN_GRANT = [("MAX_DEPTH", 3)]
    assert ids(checks.check_settings()) == ["chain_grant.E100"]


def test_max_children_of_one_is_fine(chain_settings):
    chain_settings(MAX_CHILDREN=1, MAX_DEPTH=1)
    assert checks.check_settings() == []


def test_w001_relaxed_proofs(chain_settings):
    chain_settings(RELAXED_PROOFS=True)
    messages = checks.check_settings()
    assert ids(messages) == ["chain_grant.W001"]
    assert messages[0].level == django_checks.WARNING
    chain_settings(RELAXED_PROOFS=False)
    assert checks.check_settings() == []


# --- E005: deploy -------------------------------------------------------------------


@pytest.fixture
def fixed_issuer(settings):
    """Silence W004 so a test sees only the check it is about."""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": "https://idp.example/oauth"}


def test_e005_relaxed_proofs_in_a_deployment(settings, chain_settings, fixed_issuer):
    chain_settings(RELAXED_PROOFS=True)
    settings.DEBUG = False
    messages = checks.check_deploy()
    assert ids(messages) == ["chain_grant.E005"]
    assert messages[0].level == django_checks.ERROR


def test_e005_not_raised_in_debug_or_when_strict(settings, chain_settings, fixed_issuer):
    chain_settings(RELAXED_PROOFS=True)
    settings.DEBUG = True
    assert checks.check_deploy() == []
    chain_settings(RELAXED_PROOFS=False)
    settings.DEBUG = False
    assert checks.check_deploy() == []


def test_e005_only_with_deployment_checks(settings, chain_settings, fixed_issuer):
    chain_settings(RELAXED_PROOFS=True)
    settings.DEBUG = False
    assert chain_ids(django_checks.run_checks(include_deployment_checks=True)) == [
        "chain_grant.E005",
        "chain_grant.W001",
    ]
    assert chain_ids(django_checks.run_checks()) == ["chain_grant.W001"]
    assert "chain_grant.E005" in chain_ids(
        django_checks.run_checks(include_deployment_checks=True, tags=[django_checks.Tags.security])
    )


# --- what the switches switch ------------------------------------------------------------------


@pytest.mark.django_db
def test_wallet_step_off_leaves_id_token_to_dot(client, app, alice, chain_settings):
    chain_settings(WALLET_STEP=False)
    params = {
        "client_id": app.client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "id_token",
        "scope": "openid",
        "state": "s",
        "nonce": "n",
    }
    client.force_login(alice)
    response = client.get("/oauth/authorize/?" + urlencode(params))
    # DOT's answer: an authorization-code client may not use the implicit id_token flow.
    assert response.status_code == 302
    query = parse_qs(urlparse(response["Location"]).query)
    assert query["error"] == ["unauthorized_client"] and query["state"] == ["s"]
    assert not WalletRequest.objects.exists()


# ENABLE_FOR_ALL_CLIENTS: on, every authorization-code client may chain unless its
# ChainClient row turns it off; off (the default), only clients with an enabled row.
# (switch on?, the client's ChainClient row: None = no row, else code_chain_enabled; may it chain?)
ENABLE_FOR_ALL_CASES = [
    pytest.param(True, None, True, id="on, no row"),
    pytest.param(True, True, True, id="on, row enabled"),
    pytest.param(True, False, False, id="on, row disabled"),
    pytest.param(False, None, False, id="off, no row"),
    pytest.param(False, True, True, id="off, row enabled"),
    pytest.param(False, False, False, id="off, row disabled"),
]


def client_with_row(make_app, row: bool | None, **kwargs):
    application = make_app("any-client", enabled=False, **kwargs)
    if row is not None:
        ChainClient.objects.create(application=application, code_chain_enabled=row)
    return application


@pytest.mark.django_db
@pytest.mark.parametrize(("enable_for_all", "row", "may"), ENABLE_FOR_ALL_CASES)
def test_client_may_chain_follows_enable_for_all_clients(enable_for_all, row, may, make_app, chain_settings):
    chain_settings(ENABLE_FOR_ALL_CLIENTS=enable_for_all)
    assert client_may_chain(client_with_row(make_app, row)) is may


@pytest.mark.django_db
@pytest.mark.parametrize(("enable_for_all", "row", "may"), ENABLE_FOR_ALL_CASES)
def test_client_may_chain_answers_from_the_row_the_request_already_read(
    enable_for_all, row, may, make_app, chain_settings, django_assert_num_queries
):
    chain_settings(ENABLE_FOR_ALL_CLIENTS=enable_for_all)
    application = client_with_row(make_app, row)
    chain_client_of(application)  # as client authentication does, once per request
    with django_assert_num_queries(0):
        assert client_may_chain(application) is may


@pytest.mark.django_db
@pytest.mark.parametrize("enable_for_all", [True, False], ids=["on", "off"])
def test_enable_for_all_clients_is_for_authorization_code_clients_only(enable_for_all, make_app, chain_settings):
    chain_settings(ENABLE_FOR_ALL_CLIENTS=enable_for_all)
    Application = get_application_model()
    machine = client_with_row(make_app, True, authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    assert client_may_chain(machine) is False


@pytest.mark.django_db
@pytest.mark.parametrize(("enable_for_all", "row", "may"), ENABLE_FOR_ALL_CASES)
def test_enable_for_all_clients_at_the_token_endpoint(
    enable_for_all, row, may, client, alice, make_app, make_agent, chain_settings
):
    """A real hop of a client under each combination: a new step, or unauthorized_client
    and nothing written. DOT's own code flow works for the client either way."""
    chain_settings(ENABLE_FOR_ALL_CLIENTS=enable_for_all)
    application = client_with_row(make_app, row)
    agent = make_agent("planner", applications=[application])
    flow = Flow(client, application)
    code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(code, agent.proof(code))
    if may:
        assert response.status_code == 200, response.content
        step = lifecycle.find_step(response.json()["authorization_code"])
        assert step.application_id == application.pk and step.agent_id == agent.model.pk
    else:
        assert assert_error(response, 400, "unauthorized_client")["error_description"]  # a standard one
        assert not ChainedGrant.objects.exists()
