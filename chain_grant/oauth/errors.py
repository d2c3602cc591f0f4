"""ChainError → oauthlib's error classes (the status and JSON body DOT answers with)."""

from __future__ import annotations

from oauthlib.oauth2.rfc6749 import errors

from ..core import dpop
from ..core.errors import ChainError

_OAUTH_ERRORS = {
    "invalid_grant": errors.InvalidGrantError,
    "invalid_request": errors.InvalidRequestError,
    "invalid_scope": errors.InvalidScopeError,
    "unauthorized_client": errors.UnauthorizedClientError,
}


class DPoPError(errors.CustomOAuth2Error):
    """RFC 9449 §7 / §8: ``invalid_dpop_proof`` or ``use_dpop_nonce`` (400), the latter
    with the nonce to use in ``DPoP-Nonce``."""

    def __init__(self, error: str, description: str, request, nonce: str | None = None):
        super().__init__(error, description=description, request=request, status_code=400)
        self.nonce = nonce

    @property
    def headers(self):
        headers = dict(super().headers)
        if self.nonce:
            headers["DPoP-Nonce"] = self.nonce
        return headers


def oauth_error(exc: ChainError, request) -> errors.OAuth2Error:
    """The oauthlib error for a refusal; other codes (``invalid_target``, …) keep theirs."""
    if exc.error in ("invalid_dpop_proof", "use_dpop_nonce"):
        current = dpop.nonces()  # RFC 9449 §8: tell the client the nonce to use
        return DPoPError(exc.error, exc.description, request, current[0] if current else None)
    cls = _OAUTH_ERRORS.get(exc.error)
    if cls is not None:
        return cls(description=exc.description, request=request)
    if exc.error in ("invalid_target", "consent_required", "access_denied", "interaction_required"):
        return errors.CustomOAuth2Error(exc.error, description=exc.description, request=request)
    return errors.InvalidGrantError(description=exc.description, request=request)
