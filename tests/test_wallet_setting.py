"""CHAIN_GRANT["WALLET_STEP"] = False hands response_type=id_token back to DOT."""

from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from chain_grant.models import WalletRequest

from .conftest import REDIRECT_URI


@pytest.mark.django_db
def test_wallet_step_off_leaves_id_token_to_dot(client, app, alice, settings):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "WALLET_STEP": False}
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
