"""RFC 8693 token exchange for oauthlib: ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``.

Thin by design: it checks the request's shape and the client, hands over to the
validator's ``exchange_token`` (which calls :mod:`chain_grant.core.token_exchange`),
and writes the response body.
"""

from __future__ import annotations

import json

from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase

from ..core.token_exchange import GRANT_TYPE

SINGLE_PARAMS = (
    "grant_type",
    "client_id",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "scope",
    "requested_token_type",
)


class TokenExchangeGrant(GrantTypeBase):
    """``POST /token grant_type=…:token-exchange&subject_token=…&actor_token=…``."""

    def create_token_response(self, request, token_handler):
        headers = self._get_default_headers()
        try:
            self.validate_token_request(request)
            body = self.request_validator.exchange_token(request, token_handler)
        except errors.OAuth2Error as e:
            headers.update(e.headers)
            return headers, e.json, e.status_code
        headers.update(self._create_cors_headers(request))
        return headers, json.dumps(body), 200

    def validate_token_request(self, request):
        if request.grant_type != GRANT_TYPE:
            raise errors.UnsupportedGrantTypeError(request=request)
        for param in SINGLE_PARAMS:
            if param in request.duplicate_params:
                raise errors.InvalidRequestError(description=f"Duplicate {param} parameter.", request=request)
        self.validate_client_authentication(request)
        self.validate_grant_type(request)
