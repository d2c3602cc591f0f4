"""Resource servers on the IdP's host: accept ``Authorization: DPoP <token>`` with its
``DPoP`` proof (RFC 9449 §7), and refuse a DPoP-bound token presented as a bearer token.

    from chain_grant.oauth.resource import DPoPAuthentication     # DRF, before DOT's OAuth2Authentication
    from chain_grant.oauth.resource import dpop_protected         # plain Django views

The proof must name this request (``htm``, ``htu``), the token (``ath``) and the key the
token is bound to (``cnf.jkt``)."""

from __future__ import annotations

import functools

from oauth2_provider.models import get_access_token_model

from ..client.jose import sha256_hex
from ..core import dpop
from ..core.errors import ChainError
from ..settings import chain_grant_settings
from .chain_required import Refused, refusal

DPoPRefused = Refused  # the name this module had for it


def authenticate_request(request):
    """(user, AccessToken) for a DPoP request, None when the request is not one (no
    ``DPoP`` scheme and no bound token presented as a bearer), :class:`DPoPRefused`
    otherwise refused (``invalid_token``, or ``invalid_dpop_proof``)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value and dpop.bound_key(value):
        raise DPoPRefused("invalid_token", "This token is DPoP-bound: present it with the DPoP scheme and a proof.")
    if scheme != "dpop":
        return None
    token = get_access_token_model().objects.select_related("user").filter(token_checksum=sha256_hex(value)).first()
    if token is None or not token.is_valid():
        raise DPoPRefused("invalid_token", "The access token is invalid or expired.")
    bound = dpop.bound_key(value)
    if not bound:
        raise DPoPRefused("invalid_token", "This token is not DPoP-bound: present it as a bearer token.")
    proof = request.headers.get("DPoP", "")
    try:
        key = dpop.verify_proof(
            proof,
            htm=request.method,
            htu=request.build_absolute_uri(request.path),
            access_token=value,  # no server nonce here: DPOP_NONCE_SECONDS is the token endpoint's
        )
    except ChainError as exc:
        raise DPoPRefused(exc.error, exc.description) from None
    if key.jkt != bound:
        raise DPoPRefused("invalid_dpop_proof", "The DPoP proof is not signed by the key the token is bound to.")
    return token.user, token


def challenge(exc: DPoPRefused) -> str:
    algs = " ".join(sorted(chain_grant_settings.DPOP_ALGORITHMS))
    return f'DPoP error="{exc.error}", error_description="{exc.description}", algs="{algs}"'


def dpop_protected(scopes: list[str] | None = None):
    """A plain-Django view decorator: the request must carry a valid DPoP-bound token
    (with ``scopes``) and its proof; ``request.user``/``request.auth`` are set."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            try:
                found = authenticate_request(request)
                if found is None:
                    raise DPoPRefused("invalid_token", "A DPoP-bound access token is required.")
                user, token = found
                if scopes and not token.allow_scopes(scopes):
                    raise DPoPRefused("insufficient_scope", "The token lacks a required scope.")
            except DPoPRefused as exc:
                return refusal(exc, challenge(exc))
            request.user, request.auth = user, token
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


try:
    from rest_framework import exceptions
    from rest_framework.authentication import BaseAuthentication
except ImportError:  # pragma: no cover  (DRF is the [api] extra)
    pass
else:

    class DPoPAuthentication(BaseAuthentication):
        """DRF: ``Authorization: DPoP <token>`` plus its proof. Put it before DOT's
        OAuth2Authentication, so a DPoP-bound token sent as a bearer is refused."""

        def authenticate(self, request):
            try:
                return authenticate_request(request._request)
            except DPoPRefused as exc:
                request._request.chain_dpop_refused = exc  # DRF asks a fresh instance for the challenge
                detail = {"error": exc.error, "error_description": exc.description}
                raise exceptions.AuthenticationFailed(detail) from None

        def authenticate_header(self, request):
            refused = getattr(getattr(request, "_request", request), "chain_dpop_refused", None)
            algs = " ".join(sorted(chain_grant_settings.DPOP_ALGORITHMS))
            return challenge(refused) if refused else f'Bearer realm="api", DPoP algs="{algs}"'
