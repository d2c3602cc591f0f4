"""``ChainServer``: oauthlib's OpenID Connect server plus the ``code_chain`` grant.

Set ``OAUTH2_PROVIDER["OAUTH2_SERVER_CLASS"] = "chain_grant.server.ChainServer"``.
OIDC keeps working (it subclasses ``oauthlib.openid.Server``).
"""

from oauthlib.oauth2.rfc6749.errors import OAuth2Error
from oauthlib.openid import Server

from ..core.token_exchange import GRANT_TYPE as TOKEN_EXCHANGE
from .exchange_grant import TokenExchangeGrant
from .grant import GRANT_TYPE, CodeChainGrant

ERROR_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}


class ChainServer(Server):
    # Advertised in discovery on top of DOT's OAUTH2_GRANT_TYPES_SUPPORTED.
    chain_grant_types: tuple[str, ...] = (GRANT_TYPE, TOKEN_EXCHANGE)

    def __init__(self, request_validator, *args, **kwargs):
        super().__init__(request_validator, *args, **kwargs)
        # No **kwargs here: DOT passes pre_token hooks meant for the device grant.
        self.chain_grant = CodeChainGrant(request_validator)
        self.grant_types[GRANT_TYPE] = self.chain_grant
        self.grant_types[TOKEN_EXCHANGE] = TokenExchangeGrant(request_validator)

    def create_token_response(self, *args, **kwargs):
        # Errors raised after validation (e.g. a replay lost in save_token) escape the
        # grant's own handler; answer them as the same JSON, not as text/html.
        try:
            return super().create_token_response(*args, **kwargs)
        except OAuth2Error as exc:
            return {**ERROR_HEADERS, **exc.headers}, exc.json, exc.status_code
