"""``DigestCodesMixin``: DOT keeps every live authorization code in clear in its
``Grant`` table; with this mixin it keeps the code's SHA-256 digest
(:func:`chain_grant.core.codes.code_digest`, the same value chain_grant's own
tables use), so no table holds a usable code. Every DOT validator method that
stores or looks up a ``Grant`` by code gets the digest instead.
``ChainValidatorMixin`` includes it."""

from __future__ import annotations

from ..core.codes import code_digest, plausible_code


def stored(code) -> str:
    """What DOT's table holds for ``code`` (nothing matches an implausible one)."""
    return code_digest(code) if isinstance(code, str) and plausible_code(code) else ""


class DigestCodesMixin:
    def save_authorization_code(self, client_id, code, request, *args, **kwargs):
        return super().save_authorization_code(
            client_id, {**code, "code": stored(code["code"])}, request, *args, **kwargs
        )

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        return super().validate_code(client_id, stored(code), client, request, *args, **kwargs)

    def confirm_redirect_uri(self, client_id, code, redirect_uri, client, *args, **kwargs):
        return super().confirm_redirect_uri(client_id, stored(code), redirect_uri, client, *args, **kwargs)

    def get_code_challenge(self, code, request):
        return super().get_code_challenge(stored(code), request)

    def get_code_challenge_method(self, code, request):
        return super().get_code_challenge_method(stored(code), request)

    def invalidate_authorization_code(self, client_id, code, request, *args, **kwargs):
        return super().invalidate_authorization_code(client_id, stored(code), request, *args, **kwargs)

    def get_authorization_code_scopes(self, client_id, code, redirect_uri, request):
        return super().get_authorization_code_scopes(client_id, stored(code), redirect_uri, request)

    def get_authorization_code_nonce(self, client_id, code, redirect_uri, request):
        return super().get_authorization_code_nonce(client_id, stored(code), redirect_uri, request)

    def _check_and_set_request_resource(self, request):
        # DOT 3.4 reads the Grant by request.code here (RFC 8707 narrowing).
        code = getattr(request, "code", None)
        if request.grant_type != "authorization_code" or not code:
            return super()._check_and_set_request_resource(request)
        request.code = stored(code)
        try:
            return super()._check_and_set_request_resource(request)
        finally:
            request.code = code
