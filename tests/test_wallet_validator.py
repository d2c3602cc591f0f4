"""The wallet step asks the IdP's own validator, as DOT's authorize endpoint does:
a client or scope the IdP's policy refuses is refused by the wallet step too, with
the error DOT would give, and redirect URIs are checked as DOT checks them."""

from urllib.parse import parse_qs, urlparse

import pytest

from chain_grant.models import WalletRequest
from chain_grant.validators import ChainOAuth2Validator


class PolicyValidator(ChainOAuth2Validator):
    """An IdP's own policy: a suspended client and a forbidden scope."""

    def validate_client_id(self, client_id, request, *args, **kwargs):
        return client_id != "suspended" and super().validate_client_id(client_id, request, *args, **kwargs)

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        return "forbidden" not in scopes and super().validate_scopes(
            client_id, scopes, client, request, *args, **kwargs
        )


@pytest.fixture
def policy(settings):
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OAUTH2_VALIDATOR_CLASS": "tests.test_wallet_validator.PolicyValidator",
        "SCOPES": {**settings.OAUTH2_PROVIDER["SCOPES"], "forbidden": "Never granted"},
    }


def redirect_error(response) -> str:
    assert response.status_code == 302, response.content[:300]
    return parse_qs(urlparse(response["Location"]).query)["error"][0]


@pytest.mark.usefixtures("policy")
def test_a_scope_the_idps_validator_refuses_is_refused(wflow, client, app):
    assert redirect_error(wflow.open(scope="openid forbidden")) == "invalid_scope"
    params = {"client_id": app.client_id, "response_type": "code", "redirect_uri": wflow.params()["redirect_uri"]}
    client.force_login(app.user)
    dot = client.get("/oauth/authorize/", {**params, "scope": "openid forbidden", "code_challenge": "x" * 43})
    assert redirect_error(dot) == "invalid_scope"  # what DOT's own authorize answers
    assert not WalletRequest.objects.exists()


@pytest.mark.usefixtures("policy")
def test_a_client_the_idps_validator_refuses_gets_no_wallet_request(client, make_app):
    from tests.helpers import WalletFlow

    suspended = make_app("suspended")
    page = WalletFlow(client, suspended).open()
    assert page.status_code == 400 and b"Unknown client_id" in page.content
    assert not WalletRequest.objects.exists()


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:8765.evil.example/oauth-callback",
        "http://127.0.0.1:abc/oauth-callback",
        "http://evil.example/oauth-callback",
    ],
)
def test_malformed_or_unregistered_redirect_uris_are_refused_as_dot_refuses_them(wflow, redirect_uri):
    page = wflow.open(redirect_uri=redirect_uri)
    assert page.status_code == 400 and b"redirect_uri" in page.content
    assert not WalletRequest.objects.exists()


def test_a_loopback_redirect_on_another_port_is_accepted_as_dot_accepts_it(wflow):
    """RFC 8252 §7.3: DOT allows any port on a registered loopback URI; so does the wallet step."""
    assert wflow.open(redirect_uri="http://127.0.0.1:9999/oauth-callback").status_code == 200


def test_an_oidc_implicit_client_gets_dots_implicit_flow(client, make_app, alice, settings):
    """The host's OIDC implicit client keeps working: response_type=id_token is the
    wallet step only for clients enabled for it. (idp_project follows RFC 9700 and
    turns the implicit grant off; a host that serves it, as here, keeps it.)"""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": False}
    from oauth2_provider.models import get_application_model

    from tests.helpers import REDIRECT_URI

    Application = get_application_model()
    implicit = make_app(
        "implicit-client",
        enabled=False,
        client_type=Application.CLIENT_PUBLIC,
        client_secret="",
        authorization_grant_type=Application.GRANT_IMPLICIT,
        skip_authorization=True,
    )
    client.force_login(alice)
    response = client.get(
        "/oauth/authorize/",
        {
            "client_id": implicit.client_id,
            "response_type": "id_token",
            "scope": "openid",
            "nonce": "n-1",
            "redirect_uri": REDIRECT_URI,
            "state": "s",
        },
    )
    assert response.status_code == 302, response.content[:300]
    fragment = parse_qs(urlparse(response["Location"]).fragment)
    assert "id_token" in fragment, response["Location"]
    assert fragment["state"] == ["s"]
    assert not WalletRequest.objects.exists()
