"""``DOTHardeningMixin``: DOT 3.4.1 validator paths that answer an HTTP 500 for input
an attacker controls, answered as OAuth errors instead (a code consumed by a racing
exchange is also checked for replay). ``ChainValidatorMixin`` includes it; an IdP's
own implementation wins (super())."""

from __future__ import annotations

from contextlib import contextmanager

from oauth2_provider.models import get_grant_model
from oauthlib.oauth2.rfc6749 import errors

from ..core.codes import plausible_code
from ..core.lifecycle import revoke_if_replayed


class DOTHardeningMixin:
    # oauthlib asks these for prompt=none with scope openid; DOT 3.4.1 implements neither
    # (NotImplementedError: an HTTP 500 for any prompt=none OIDC request). The view
    # decides instead: DOT's handle_no_permission answers login_required, DOT's view shows
    # its page (without code=), and a chain step answers consent_required. This is the one
    # answer of DOT's authorize that plugging in changes: a 500 becomes DOT's own page.
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

    # DOT re-reads the Grant in these; a parallel exchange may have consumed it since
    # validate_code (DoesNotExist, an HTTP 500). That request lost the race: a replay.
    def get_code_challenge(self, code, request):
        with self._consumed_is_replay(code, request):
            return super().get_code_challenge(code, request)

    def get_code_challenge_method(self, code, request):
        with self._consumed_is_replay(code, request):
            return super().get_code_challenge_method(code, request)

    def confirm_redirect_uri(self, client_id, code, redirect_uri, client, request, *args, **kwargs):
        with self._consumed_is_replay(code, request):
            return super().confirm_redirect_uri(client_id, code, redirect_uri, client, request, *args, **kwargs)

    @contextmanager
    def _consumed_is_replay(self, code, request):
        try:
            yield
        except get_grant_model().DoesNotExist:
            revoke_if_replayed(code)
            raise errors.InvalidGrantError(request=request) from None

    def _authenticate_basic_auth(self, request):
        # base64.b64decode raises a plain ValueError for a non-ASCII str (DOT catches only
        # binascii.Error): "Authorization: Basic é" was a 500 at every endpoint that
        # authenticates clients (token, revocation, introspection, device authorization).
        auth_string = self._extract_basic_auth(request)
        if auth_string and not auth_string.isascii():
            return False
        return super()._authenticate_basic_auth(request)

    def _load_application(self, client_id, request):
        # psycopg 3 raises DataError (not the ValueError DOT expects) for a NUL byte.
        if client_id and "\x00" in client_id:
            return None
        return super()._load_application(client_id, request)
