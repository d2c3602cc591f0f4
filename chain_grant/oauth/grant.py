"""The ``code_chain`` grant type for oauthlib: an agent hop at the token endpoint.

Thin by design: it checks the request's shape and the client, hands over to the
validator's ``advance_chain`` (which calls :mod:`chain_grant.core.steps`), and
writes the response body.
"""

from __future__ import annotations

import json

from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase

from ..settings import chain_grant_settings

GRANT_TYPE = "code_chain"
REQUIRED_PARAMS = ("authorization_code", "id_token")
SINGLE_PARAMS = (
    "grant_type",
    "client_id",
    "authorization_code",
    "id_token",
    "scope",
    "code_challenge",
    "code_challenge_method",
    "code_verifier",
    "joined_codes",
    "joined_code_verifiers",
)


def hop_response(step, code: str) -> dict:
    """The token endpoint's answer to a hop (Cache-Control: no-store, from oauthlib)."""
    return {
        "authorization_code": code,
        "expires_in": chain_grant_settings.CODE_EXPIRE_SECONDS,
        "scope": step.scope,
        "chain_id": str(step.root_id),
        "depth": step.depth,
    }


class CodeChainGrant(GrantTypeBase):
    """``POST /token grant_type=code_chain&authorization_code=…&id_token=…``."""

    def create_token_response(self, request, token_handler):
        headers = self._get_default_headers()
        try:
            self.validate_token_request(request)
            step, code = self.request_validator.advance_chain(request)
        except errors.OAuth2Error as e:
            headers.update(e.headers)
            return headers, e.json, e.status_code
        headers.update(self._create_cors_headers(request))
        return headers, json.dumps(hop_response(step, code)), 200

    def validate_token_request(self, request):
        if request.grant_type != GRANT_TYPE:
            raise errors.UnsupportedGrantTypeError(request=request)
        for param in REQUIRED_PARAMS:
            if not getattr(request, param, None):
                raise errors.InvalidRequestError(description=f"Missing {param} parameter.", request=request)
        for param in SINGLE_PARAMS:
            if param in request.duplicate_params:
                raise errors.InvalidRequestError(description=f"Duplicate {param} parameter.", request=request)
        self.validate_client_authentication(request)
        self.validate_grant_type(request)
