"""``ChainOAuthLibCore``: DOT's OAuthLibCore, keeping repeated form parameters, with
every error answered as ``{"error", "error_description"}`` and DOT 3.4.1's device
authorization crash guarded.

DOT keeps only the last value of a repeated parameter (except RFC 8707's
``resource``), so oauthlib never sees duplicates. RFC 6749 §3.1 says request
parameters MUST NOT be included more than once; with every value passed on, the
grants' duplicate checks (``code_chain``'s included) refuse such requests.

    OAUTH2_PROVIDER["OAUTH2_BACKEND_CLASS"] = "chain_grant.backends.ChainOAuthLibCore"
"""

from __future__ import annotations

import dataclasses
import json

from oauth2_provider.models import DeviceCodeResponse
from oauth2_provider.oauth2_backends import OAuthLibCore
from oauthlib.oauth2.rfc6749 import errors

# RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 8628 §3.5: what each error code means, for the
# oauthlib errors raised without a description ({"error": "invalid_client"}).
DESCRIPTIONS = {
    "invalid_request": "The request is missing a parameter, repeats one, or is otherwise malformed.",
    "invalid_client": "Client authentication failed.",
    "invalid_grant": "The grant is invalid, expired, revoked, or was issued to another client.",
    "unauthorized_client": "This client may not use this grant type.",
    "unsupported_grant_type": "This grant type is not supported.",
    "invalid_scope": "The requested scope is invalid, unknown, or exceeds what was granted.",
    "unsupported_token_type": "This token type cannot be revoked.",
    "access_denied": "The request was denied.",
    "authorization_pending": "The user has not yet approved the device.",
    "slow_down": "Polling too fast: wait longer between requests.",
    "expired_token": "The device_code has expired.",
}
# What DOT 3.4.1's DeviceAuthorizationView can pass to DeviceCodeResponse(**response).
_DEVICE_RESPONSE_FIELDS = {field.name for field in dataclasses.fields(DeviceCodeResponse)}


def with_description(body):
    """``body`` (a JSON error text, or a dict) with an ``error_description`` if it lacks one."""
    data = body
    if isinstance(body, (str, bytes)):
        try:
            data = json.loads(body)
        except ValueError:
            return body
    if not isinstance(data, dict) or "error" not in data or data.get("error_description"):
        return body
    data = {**data, "error_description": DESCRIPTIONS.get(data["error"], "The request was refused.")}
    return data if isinstance(body, dict) else json.dumps(data)


class ChainOAuthLibCore(OAuthLibCore):
    def extract_body(self, request):
        return [(key, value) for key, values in request.POST.lists() for value in values]

    def create_token_response(self, request):
        uri, headers, body, status = super().create_token_response(request)
        return uri, headers, with_description(body) if status >= 400 else body, status

    def create_revocation_response(self, request):
        uri, headers, body, status = super().create_revocation_response(request)
        return uri, headers, with_description(body) if status >= 400 else body, status

    def create_device_authorization_response(self, request):
        # DOT 3.4.1's DeviceAuthorizationView reads request.POST["client_id"] (oauthlib
        # also takes it from the query string: a KeyError) and then builds
        # DeviceCodeResponse(**response), which has no "scope" field (oauthlib 4.0.1
        # adds one: a TypeError). Either was a 500 for a valid request.
        if len(request.POST.getlist("client_id")) != 1:
            error = errors.InvalidRequestError(description="client_id must be given once, in the form body.")
            return {"Cache-Control": "no-store"}, error.json, 400  # DOT sets the Content-Type
        headers, body, status = super().create_device_authorization_response(request)
        if status == 200 and isinstance(body, dict):
            body = {key: value for key, value in body.items() if key in _DEVICE_RESPONSE_FIELDS}
        return headers, with_description(body) if status >= 400 else body, status
