"""ChainError → oauthlib's error classes (the status and JSON body DOT answers with)."""

from __future__ import annotations

from oauthlib.oauth2.rfc6749 import errors

from ..core.errors import ChainError

_OAUTH_ERRORS = {
    "invalid_grant": errors.InvalidGrantError,
    "invalid_request": errors.InvalidRequestError,
    "invalid_scope": errors.InvalidScopeError,
    "unauthorized_client": errors.UnauthorizedClientError,
}


def oauth_error(exc: ChainError, request) -> errors.OAuth2Error:
    """The oauthlib error for a refusal; other codes (``invalid_target``, …) keep theirs."""
    cls = _OAUTH_ERRORS.get(exc.error)
    if cls is not None:
        return cls(description=exc.description, request=request)
    if exc.error in ("invalid_target", "consent_required", "access_denied", "interaction_required"):
        return errors.CustomOAuth2Error(exc.error, description=exc.description, request=request)
    return errors.InvalidGrantError(description=exc.description, request=request)
