"""Who may do what: the client switch, scope attenuation, PKCE for a new code, and
what browser steps refuse. Plain functions; each refusal is a ChainError."""

from __future__ import annotations

import hmac
import re

from oauth2_provider.models import AbstractApplication
from oauth2_provider.settings import oauth2_settings

from ..client.pkce import s256
from ..models import ChainClient
from ..settings import chain_grant_settings
from .errors import ChainError

_NO_ROW = object()  # chain_client_of's cache, not read yet


def client_may_chain(application) -> bool:
    """code_chain (and the browser steps) are for authorization-code clients that an
    operator enabled (or all of them, with ENABLE_FOR_ALL_CLIENTS, unless disabled). The
    client's row as :func:`chain_client_of` read it when this application instance holds it
    (a token request has read it to authenticate the client), else one EXISTS query."""
    if not application.allows_grant_type(AbstractApplication.GRANT_AUTHORIZATION_CODE):
        return False
    row = getattr(application, "_chain_grant_row", _NO_ROW)
    if row is not _NO_ROW:  # already read in this request (client authentication): no query per hop
        enabled = None if not isinstance(row, ChainClient) else row.code_chain_enabled
        return enabled is not False if chain_grant_settings.ENABLE_FOR_ALL_CLIENTS else enabled is True
    if chain_grant_settings.ENABLE_FOR_ALL_CLIENTS:
        return not ChainClient.objects.filter(application=application, code_chain_enabled=False).exists()
    return ChainClient.objects.filter(application=application, code_chain_enabled=True).exists()


def poc_client(application) -> bool:
    """Boruta's PoC requests from this client (PKCE optional, self-asserted keys named by
    their thumbprint, one-hour proofs): only with RELAXED_PROOFS on *and* the client's
    ChainClient.poc_compatible switch (no query while RELAXED_PROOFS is off)."""
    if not chain_grant_settings.RELAXED_PROOFS or application is None:
        return False
    return ChainClient.objects.filter(application=application, poc_compatible=True).exists()


def configure_client(application, **switches: bool) -> ChainClient:
    """Set a client's chain switches (``code_chain_enabled``, ``wallet_step``,
    ``poc_compatible``); the others keep their value. Saved through the model, so turning
    code_chain off applies ON_DISABLE (chain_grant.receivers)."""
    unknown = set(switches) - {"code_chain_enabled", "wallet_step", "poc_compatible"}
    if unknown:
        raise ValueError(f"unknown switch(es): {', '.join(sorted(unknown))}")
    row = ChainClient.objects.filter(application=application).first() or ChainClient(application=application)
    for name, value in switches.items():
        setattr(row, name, bool(value))
    row.save()
    return row


PKCE_METHODS = ("S256", "plain")

_PKCE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{43,128}")


def wallet_step_client(application) -> bool:
    """Is ``response_type=id_token`` at authorize this client's wallet step? Only for a
    client that may chain and whose wallet switch is on (WALLET_STEP turns it off for
    every client); any other client gets DOT's OIDC implicit flow, unchanged."""
    if not chain_grant_settings.WALLET_STEP or not client_may_chain(application):
        return False
    return not ChainClient.objects.filter(application=application, wallet_step=False).exists()


def attenuate_scope(parent_scope: str, allowed: set[str], requested: str | None) -> str:
    """Agents only narrow: the result is ⊆ parent ∩ allowed (default: all of that).
    A step with no scope at all is refused: its token would authorize nothing."""
    parent_scopes = parent_scope.split()
    available = [s for s in parent_scopes if s in allowed]
    if requested is None:
        if not available:
            raise ChainError("The agent may hold none of the previous step's scopes.", "invalid_scope")
        return " ".join(available)
    wanted = requested.split()
    if not wanted:
        raise ChainError("The scope parameter is empty.", "invalid_scope")
    extra = set(wanted) - set(available)
    if extra:
        raise ChainError(
            "Requested scope exceeds the previous step's scope or the agent's allowed scopes: "
            + " ".join(sorted(extra)),
            "invalid_scope",
        )
    return " ".join(dict.fromkeys(wanted))


def check_code_verifier(verifier: str | None, challenge: str, method: str, *, required: bool) -> None:
    """RFC 7636 §4.6 for the *previous* code: a public client proves it holds the
    verifier of the code it continues (a stolen code plus any agent's proof would
    otherwise mint a new code under the thief's PKCE)."""
    if not verifier:
        if required:
            raise ChainError("code_verifier of the previous code is required for a public client.", "invalid_grant")
        return
    if not challenge:
        raise ChainError("The previous code has no code_challenge to verify code_verifier against.", "invalid_grant")
    if not _PKCE_VERIFIER.fullmatch(verifier):
        raise ChainError("code_verifier must be 43 to 128 unreserved characters (RFC 7636).", "invalid_request")
    computed = s256(verifier) if method == "S256" else verifier
    if not hmac.compare_digest(computed.encode("ascii"), challenge.encode("ascii", "replace")):
        raise ChainError("code_verifier does not match the previous code's code_challenge.", "invalid_grant")


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


def chain_client_of(application) -> ChainClient | None:
    """The client's ChainClient row, read once per application instance (one token
    request asks several questions of it: key-only, DPoP required)."""
    cached = getattr(application, "_chain_grant_row", _NO_ROW)
    if cached is _NO_ROW:
        cached = ChainClient.objects.filter(application=application).first()
        application._chain_grant_row = cached
    return cached if isinstance(cached, ChainClient) else None


def dpop_required(application) -> bool:
    """Whether every hop and code exchange of this client must carry a DPoP proof."""
    row = chain_client_of(application) if application is not None else None
    return bool(row and row.dpop_required)
