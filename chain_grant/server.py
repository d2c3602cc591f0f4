"""``ChainServer``: oauthlib's OpenID Connect server plus the ``code_chain`` grant.

Set ``OAUTH2_PROVIDER["OAUTH2_SERVER_CLASS"] = "chain_grant.server.ChainServer"``.
OIDC keeps working (it subclasses ``oauthlib.openid.Server``).
"""

from oauthlib.openid import Server

from .grants import GRANT_TYPE, CodeChainGrant


class ChainServer(Server):
    def __init__(self, request_validator, *args, **kwargs):
        super().__init__(request_validator, *args, **kwargs)
        # No **kwargs here: DOT passes pre_token hooks meant for the device grant.
        self.chain_grant = CodeChainGrant(request_validator)
        self.grant_types[GRANT_TYPE] = self.chain_grant
