"""``DOTHardeningMixin``: DOT 3.4.1 validator paths that answer an HTTP 500 for input
an attacker controls, answered as OAuth errors instead. Nothing chain-specific;
``ChainValidatorMixin`` includes it. An IdP's own implementation wins (super())."""

from __future__ import annotations

from ..core.codes import plausible_code


class DOTHardeningMixin:
    # oauthlib asks these for prompt=none with scope openid; DOT 3.4.1 implements neither
    # (NotImplementedError: an HTTP 500 for any prompt=none OIDC request). The view
    # decides instead: DOT's handle_no_permission answers login_required, and
    # chain_grant's AuthorizationView answers consent_required where DOT would show a
    # page.
    def validate_silent_login(self, request):
        try:
            return super().validate_silent_login(request)
        except NotImplementedError:
            return True

    def validate_silent_authorization(self, request):
        try:
            return super().validate_silent_authorization(request)
        except NotImplementedError:
            return True

    def get_authorization_code_scopes(self, client_id, code, redirect_uri, request):
        # oauthlib's OIDC dispatcher asks this before validate_code; DOT would query
        # (and on PostgreSQL crash on) an implausible code such as one with a NUL byte.
        if not plausible_code(code or ""):
            return []
        return super().get_authorization_code_scopes(client_id, code, redirect_uri, request)

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        if not plausible_code(code or ""):
            return False
        return super().validate_code(client_id, code, client, request, *args, **kwargs)

    def _load_application(self, client_id, request):
        # psycopg 3 raises DataError (not the ValueError DOT expects) for a NUL byte.
        if client_id and "\x00" in client_id:
            return None
        return super()._load_application(client_id, request)
