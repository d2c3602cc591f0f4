"""Resource servers that require something of a token's chain (``core.requirements``):

    from chain_grant.oauth.chain_required import ChainRequired, Requirement, chain_required

    class Answers(APIView):                                           # DRF
        permission_classes = [ChainRequired]
        chain_requirement = Requirement(actor="writer", person_within=1, scopes=["email"])

    @chain_required(actor="writer", person_within=1, scopes=["email"])   # plain Django
    def answers(request): ...

Where the chain comes from:

* **the IdP's own database**, for a resource server inside the IdP (no
  ``RESOURCE_SERVER_INTROSPECTION_URL``);
* **introspection**, for a remote one (DOT's ``RESOURCE_SERVER_INTROSPECTION_URL`` with
  ``RESOURCE_SERVER_AUTH_TOKEN`` or ``RESOURCE_SERVER_INTROSPECTION_CREDENTIALS``; its
  client_id in the IdP's ``CHAIN_GRANT["INTROSPECTION_RESOURCE_SERVERS"]``). DOT's own
  ``_get_token_from_authentication_server`` makes the call and caches the token in the
  resource server's database until ``exp``, at most ``RESOURCE_SERVER_TOKEN_CACHING_SECONDS``;
  the chain claims of that answer are cached (``CHAIN_GRANT["RESOURCE_SERVER_CACHE"]``)
  until the very same moment, and read again with the token after it. With
  :class:`ChainResourceValidator` (or :class:`ChainClaimsValidatorMixin` in the resource
  server's own validator) they are the claims of the call DOT's authentication made.

A refusal is RFC 6750's: ``401 invalid_token`` or ``403 insufficient_scope``, with
``WWW-Authenticate: Bearer error="…", error_description="requires the actor writer"``
(``DPoP …`` for a DPoP request), never a 500.
"""

from __future__ import annotations

import functools
import logging
import re
from contextvars import ContextVar
from typing import Any

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from django.utils import timezone
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings

from ..core.requirements import Actor, ChainView, Requirement, joined_actors, unmet, view_from_claims
from ..settings import chain_grant_settings

__all__ = [
    "ChainClaimsValidatorMixin",
    "ChainRequired",
    "ChainResourceValidator",
    "Refused",
    "Requirement",
    "chain_required",
    "chain_view",
    "check",
]

log = logging.getLogger(__name__)
# What a resource server keeps of an introspection answer, with the token.
KEPT_CLAIMS = ("chain_id", "chain_depth", "chain_actors", "chain_joins", "act", "cnf")
NOT_QUOTABLE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")  # RFC 6749 §5.2's error_description


class Refused(Exception):
    """A refusal: RFC 6750's ``error`` and a description naming what is unmet."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error, self.description = str(error), str(description)


def remote() -> bool:
    """Whether this process is a remote resource server (DOT's introspection configured)."""
    return bool(oauth2_settings.RESOURCE_SERVER_INTROSPECTION_URL)


def chain_view(request, token) -> ChainView | None:
    """The chain view of ``token`` (an AccessToken this request authenticated with), from
    the database or, on a remote resource server, from introspection. None: a token that
    is not from a chain. :class:`Refused` (``invalid_token``): a chain that cannot be trusted."""
    if remote():
        claims = remote_claims(_presented(request), token)
        if "cnf" in claims:  # RFC 9449 §7.2: a bound token is not a bearer token
            raise Refused("invalid_token", "This token is DPoP-bound: this resource server takes bearer tokens only.")
        try:
            return view_from_claims({**claims, "scope": token.scope})
        except ValueError:
            log.warning("Introspection answered malformed chain claims: %r", sorted(claims))
            raise Refused("invalid_token", "The token's chain claims are malformed.") from None
    return local_view(request, token)


def local_view(request, token) -> ChainView | None:
    """The chain view from the IdP's own database (the same line and joins introspection's
    claims carry). Imported here, not above: a remote resource server has no chain tables."""
    from ..core import lineage

    try:
        step = lineage.step_for_token(token)
    except lineage.UnverifiedLink:
        raise Refused(
            "invalid_token", "This token's link to its chain step does not match the signed record."
        ) from None
    if step is None:
        return None
    if step.revoked_at:
        raise Refused("invalid_token", "The chain step of this token was revoked.")
    request.chain_step = step  # for the view: the step, already read
    line = lineage.ancestors(step)
    actors = tuple(Actor(node.subject, node.kind) for node in line)
    joined = frozenset(joined_actors(lineage.chain_joins(step, line)))
    return ChainView(actors, step.depth, frozenset(token.scope.split()), joined)


def remote_claims(value: str, token) -> dict[str, Any]:
    """The chain claims introspection gave for this token: kept since DOT introspected it
    (with :class:`ChainClaimsValidatorMixin`) or introspected now, through DOT."""
    claims = caches[chain_grant_settings.RESOURCE_SERVER_CACHE].get(_key(token.token_checksum))
    if claims is not None:
        return claims
    found = introspect(value)
    if found is None:
        raise Refused("invalid_token", "The access token is invalid or expired.")
    return found.chain_claims


def _key(checksum: str) -> str:
    return f"chain_grant:claims:{checksum}"


def keep_claims(found, answer: dict[str, Any]) -> dict[str, Any]:
    """The chain claims of an introspection ``answer``, cached until the token row DOT
    wrote for it (``found``) expires: ``exp``, at most RESOURCE_SERVER_TOKEN_CACHING_SECONDS."""
    claims = {name: answer[name] for name in KEPT_CLAIMS if name in answer}
    timeout = max(0, int((found.expires - timezone.now()).total_seconds()))
    caches[chain_grant_settings.RESOURCE_SERVER_CACHE].set(_key(found.token_checksum), claims, timeout=timeout)
    return claims


_answer: ContextVar[dict[str, Any] | None] = ContextVar("chain_grant_introspection_answer", default=None)


class ChainClaimsValidatorMixin:
    """For a remote resource server's ``OAUTH2_VALIDATOR_CLASS`` (before DOT's validator):
    when DOT introspects a token (``_get_token_from_authentication_server``, unchanged), the
    answer's chain claims are kept with it, so a chain requirement costs no second call.
    DOT hands the answer over only when it names a ``username``; every chain token does."""

    def get_or_create_user_from_content(self, content):
        answer = _answer.get()
        if answer is not None:
            answer.update(content)
        return super().get_or_create_user_from_content(content)

    def _get_token_from_authentication_server(self, token, *args, **kwargs):
        answer = {}
        reset = _answer.set(answer)  # per thread and task: DOT shares one validator
        try:
            found = super()._get_token_from_authentication_server(token, *args, **kwargs)
        finally:
            _answer.reset(reset)
        if found is not None:
            found.chain_claims = keep_claims(found, answer)
        return found


class ChainResourceValidator(ChainClaimsValidatorMixin, OAuth2Validator):
    """DOT's validator with the chain claims kept: ``"OAUTH2_VALIDATOR_CLASS":
    "chain_grant.oauth.chain_required.ChainResourceValidator"`` on a remote resource server."""


@functools.cache
def _keeping(validator_class):
    if issubclass(validator_class, ChainClaimsValidatorMixin):
        return validator_class
    return type(f"ChainClaims{validator_class.__name__}", (ChainClaimsValidatorMixin, validator_class), {})


def introspect(value: str):
    """DOT's ``_get_token_from_authentication_server`` through the configured validator
    (its request, errors, token row, lifetime and user), the chain claims kept: the
    AccessToken (``.chain_claims``) or None."""
    validator = _keeping(oauth2_settings.OAUTH2_VALIDATOR_CLASS)()
    return validator._get_token_from_authentication_server(
        value,
        oauth2_settings.RESOURCE_SERVER_INTROSPECTION_URL,
        oauth2_settings.RESOURCE_SERVER_AUTH_TOKEN,
        oauth2_settings.RESOURCE_SERVER_INTROSPECTION_CREDENTIALS,
    )


def check(request, token, requirement: Requirement) -> ChainView | None:
    """The token's chain view when it meets ``requirement``; :class:`Refused` otherwise."""
    if not token.is_valid():
        raise Refused("invalid_token", "The access token is invalid or expired.")
    view = chain_view(request, token) if requirement.needs_chain or remote() else None
    missing = unmet(view, requirement, scopes=token.scope.split())
    if missing:
        raise Refused("insufficient_scope", missing)
    return view


def _presented(request) -> str:
    return request.headers.get("Authorization", "").partition(" ")[2].strip()


def challenge(request, exc: Refused | None) -> str:
    """RFC 6750 §3 (RFC 9449 §7.1 for a DPoP request); no error for a request with no token."""
    if exc is None:
        return "Bearer"
    description = NOT_QUOTABLE.sub("?", exc.description)
    if request.headers.get("Authorization", "")[:5].lower() == "dpop " and not remote():
        from . import resource

        return resource.challenge(Refused(exc.error, description))
    return f'Bearer error="{exc.error}", error_description="{description}"'


def status_of(exc: Refused) -> int:
    return 403 if exc.error == "insufficient_scope" else 401


def refusal(exc: Refused, www_authenticate: str) -> JsonResponse:
    """RFC 6750 §3's answer: the status, ``{"error", "error_description"}``, the challenge."""
    response = JsonResponse({"error": exc.error, "error_description": exc.description}, status=status_of(exc))
    response["WWW-Authenticate"] = www_authenticate
    return response


def authenticate(request):
    """The AccessToken of a plain Django request: DPoP (on the IdP's host), or a bearer
    token as DOT checks it (its database, or introspection on a remote resource server)."""
    if not remote():
        from . import resource

        found = resource.authenticate_request(request)  # raises Refused (DPoPRefused is Refused)
        if found is not None:
            return found[1]
    if not request.headers.get("Authorization"):
        return None
    valid, oauth_request = get_oauthlib_core().verify_request(request, scopes=[])
    if not valid:
        error = dict(getattr(oauth_request, "oauth2_error", None) or {})
        description = str(error.get("error_description") or "The access token is invalid or expired.")  # lazy text
        raise Refused("invalid_token", description)
    return oauth_request.access_token


def chain_required(requirement: Requirement | None = None, **requirements):
    """A plain-Django view decorator: the request's token (bearer or DPoP) must meet the
    requirement (``Requirement(**requirements)``); ``request.user``, ``request.auth`` and
    ``request.chain`` (the :class:`ChainView`, None for a token not from a chain) are set."""
    required = requirement if requirement is not None else Requirement(**requirements)

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            try:
                token = authenticate(request)
                if token is None:
                    return refusal(Refused("invalid_token", "An access token is required."), challenge(request, None))
                request.chain = check(request, token, required)
            except Refused as exc:
                return refusal(exc, challenge(request, exc))
            request.user, request.auth = token.user, token
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


try:
    from rest_framework import exceptions
    from rest_framework.permissions import BasePermission
except ImportError:  # pragma: no cover  (DRF is the [api] extra)
    pass
else:

    class ChainRefused(exceptions.APIException):
        """An RFC 6750 refusal in DRF: the status, the description, and the challenge
        (DRF's exception handler sets ``WWW-Authenticate`` from ``auth_header``)."""

        def __init__(self, request, exc: Refused):
            super().__init__({"error": exc.error, "error_description": exc.description}, exc.error)
            self.status_code = status_of(exc)
            self.auth_header = challenge(request, exc)

    class ChainRequired(BasePermission):
        """DRF: the token the request authenticated with (DOT's ``OAuth2Authentication``,
        or ``DPoPAuthentication``) meets the view's ``chain_requirement`` (a
        :class:`Requirement`); ``request.chain`` is its :class:`ChainView`."""

        def has_permission(self, request, view):
            token = request.auth
            if token is None or not hasattr(token, "token_checksum"):
                return False  # no token: DRF answers 401 with the authenticator's challenge
            required = getattr(view, "chain_requirement", None)
            if not isinstance(required, Requirement):  # as DOT's TokenHasScope without required_scopes
                raise ImproperlyConfigured(f"{type(view).__name__}.chain_requirement must be a Requirement")
            try:
                request.chain = check(request._request, token, required)
            except Refused as exc:
                raise ChainRefused(request._request, exc) from None
            return True
