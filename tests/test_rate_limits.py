"""Anonymous requests to the chain's browser entry points (the wallet request page,
authorize with code=) are rate-limited per client and IP through Django's cache;
DOT's own authorize endpoint is not."""

from urllib.parse import urlencode

import pytest
from django.core.cache import cache

from tests.helpers import REDIRECT_URI, WalletFlow


@pytest.fixture
def limits(settings):
    cache.clear()
    settings.CHAIN_GRANT = {
        **settings.CHAIN_GRANT,
        "RATE_LIMITS": {"wallet_request": [3, 60], "chain_authorize": [2, 60]},
    }
    yield
    cache.clear()


def wallet_url(app, **extra):
    return "/oauth/authorize/?" + urlencode(WalletFlow(None, app).params(**extra), doseq=True)


@pytest.mark.usefixtures("limits")
def test_wallet_requests_are_limited_per_client_and_ip(client, app, make_app):
    assert [client.get(wallet_url(app)).status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get(wallet_url(app))
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert b"Too many wallet requests" in refused.content
    other = make_app("other-client")
    assert client.get(wallet_url(other)).status_code == 200  # another client: its own budget
    assert client.get(wallet_url(app), REMOTE_ADDR="10.9.9.9").status_code == 200  # another address


@pytest.mark.usefixtures("limits")
def test_anonymous_chain_authorize_is_limited_and_dot_authorize_is_not(client, app):
    params = {"client_id": app.client_id, "response_type": "code", "redirect_uri": REDIRECT_URI, "state": "s"}
    chain = "/oauth/authorize/?" + urlencode({**params, "code": "anything"})
    assert [client.get(chain).status_code for _ in range(2)] == [302, 302]  # to the login page
    assert client.get(chain).status_code == 429
    plain = "/oauth/authorize/?" + urlencode(params)
    assert {client.get(plain).status_code for _ in range(5)} == {302}  # DOT's, unchanged


@pytest.mark.usefixtures("limits")
def test_a_logged_in_person_is_not_counted(client, app, alice):
    client.force_login(alice)
    assert {client.get(wallet_url(app)).status_code for _ in range(5)} == {200}
