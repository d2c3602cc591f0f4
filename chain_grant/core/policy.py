"""Who may do what: the client switch, scope attenuation, PKCE for a new code, and
what browser steps refuse. Plain functions; each refusal is a ChainError."""

from __future__ import annotations

import re

from oauth2_provider.models import AbstractApplication
from oauth2_provider.settings import oauth2_settings

from ..models import ChainClient
from ..settings import chain_grant_settings
from .errors import ChainError


def client_may_chain(application) -> bool:
    """code_chain (and the browser steps) are for authorization-code clients that an
    operator enabled (or all of them, with ENABLE_FOR_ALL_CLIENTS, unless disabled)."""
    if not application.allows_grant_type(AbstractApplication.GRANT_AUTHORIZATION_CODE):
        return False
    if chain_grant_settings.ENABLE_FOR_ALL_CLIENTS:
        return not ChainClient.objects.filter(application=application, code_chain_enabled=False).exists()
    return ChainClient.objects.filter(application=application, code_chain_enabled=True).exists()


PKCE_METHODS = ("S256", "plain")

_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{43,128}")


def attenuate_scope(parent_scope: str, allowed: set[str], requested: str | None) -> str:
    """Agents only narrow: the result is ⊆ parent ∩ allowed (default: all of that)."""
    parent_scopes = parent_scope.split()
    available = [s for s in parent_scopes if s in allowed]
    if requested is None:
        return " ".join(available)
    wanted = requested.split()
    extra = set(wanted) - set(available)
    if extra:
        raise ChainError(
            "Requested scope exceeds the previous step's scope or the agent's allowed scopes: "
            + " ".join(sorted(extra)),
            "invalid_scope",
        )
    return " ".join(dict.fromkeys(wanted))


def check_pkce(code_challenge: str | None, method: str | None, required: bool) -> tuple[str, str]:
    if not code_challenge:
        if method:
            raise ChainError("code_challenge_method without code_challenge.", "invalid_request")
        if required:
            raise ChainError("Code challenge required.", "invalid_request")
        return "", ""
    method = method or "plain"  # RFC 7636 §4.3
    if method not in PKCE_METHODS:
        raise ChainError("Unsupported code_challenge_method.", "invalid_request")
    if method == "plain" and oauth2_settings.COMPLIANT_BCP_RFC9700_PKCE_METHOD:
        raise ChainError('Unsupported "plain" code_challenge_method; use "S256".', "invalid_request")
    if not _PKCE_CHALLENGE.fullmatch(code_challenge):
        raise ChainError("code_challenge must be 43 to 128 unreserved characters (RFC 7636).", "invalid_request")
    return code_challenge, method


def refuse_resource(resource: list[str]) -> None:
    """RFC 8707 ``resource`` on a browser step (consent or wallet): refused. The step's
    code would not carry it, nor would the agent hops after it, so the token would
    silently be valid at every resource server instead of the one the client asked."""
    if resource:
        raise ChainError("Resource indicators (resource) are not supported on chain steps.", "invalid_target")
