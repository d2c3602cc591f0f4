"""RFC 7523 §2.2 client authentication (``private_key_jwt``), with RFC 7521 §4.2's
rules, for clients whose ``ChainClient`` registers public keys (``client_jwks``).

Mirrors DOT's upcoming implementation (DOT #1762, unreleased in 3.4.1): the same
field names, the same checks, every failure an ``invalid_client`` that says no more.
Two differences, both deliberate: the jti is recorded in the database (single use
across replicas, failing closed; DOT uses the cache), and no ``jwks_uri`` is fetched
(no server-side requests)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..models import ChainClient
from ..settings import chain_grant_settings
from . import policy, proofs
from .errors import ChainError
from .replay import use_once

log = logging.getLogger("chain_grant")

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FAILED = "Client authentication failed."


class AssertionRefused(ChainError):
    """The client assertion does not authenticate the client (logged, never shown)."""

    def __init__(self, reason: str):
        super().__init__(FAILED, "invalid_client")
        self.reason = reason


def client_keys(chain_client: ChainClient | None) -> list[dict[str, Any]]:
    if chain_client is None or not isinstance(chain_client.client_jwks, dict):
        return []
    keys = chain_client.client_jwks.get("keys")
    return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []


def register_keys(application, text: str, *, replace: bool = False, key_only: bool | None = None) -> ChainClient:
    """Add (or, ``replace``: rotate to) the public keys in ``text`` (a JWK, JWKS or PEM;
    private and symmetric keys are refused) to a client's ``client_jwks``; ``key_only``
    sets whether its secret is refused. ValueError for a bad key or a kid clash."""
    new = proofs.load_public_keys(text)
    chain_client, _ = ChainClient.objects.get_or_create(application=application)
    keys = [] if replace else client_keys(chain_client)
    taken = {k.get("kid") for k in keys}
    for key in new:
        if key["kid"] in taken:
            raise ValueError(f"the client already has a key with kid {key['kid']!r}")
        keys.append(key)
        taken.add(key["kid"])
    chain_client.client_jwks = {"keys": keys}
    if key_only is not None:
        chain_client.token_endpoint_auth_method = ChainClient.AuthMethod.PRIVATE_KEY_JWT if key_only else ""
    chain_client.save(update_fields=["client_jwks", "token_endpoint_auth_method"])
    return chain_client


def key_only(application) -> bool:
    """Whether this client authenticates with private_key_jwt only (its secret refused)."""
    chain_client = policy.chain_client_of(application)
    method = chain_client.token_endpoint_auth_method if chain_client is not None else ""
    return method == ChainClient.AuthMethod.PRIVATE_KEY_JWT


def authenticate(
    *,
    assertion_type: Any,
    assertion: Any,
    client_id_param: Any,
    other_credentials: bool,
    audiences: list[str],
    usable: Callable[[Any], bool],
):
    """The application a client assertion authenticates, or :class:`AssertionRefused`.

    ``other_credentials``: the request also carries HTTP Basic or a ``client_secret``
    (RFC 6749 §2.3: one method per request). ``audiences``: the issuer and the URL of
    the endpoint it was posted to (RFC 7523bis accepts both). ``usable``: the IdP's own
    check of the application (DOT's ``is_usable``)."""
    if assertion_type != JWT_BEARER:
        raise AssertionRefused(f"client_assertion_type {str(assertion_type)[:80]!r}")
    if not isinstance(assertion, str) or not assertion:
        raise AssertionRefused("no client_assertion")
    if other_credentials:
        raise AssertionRefused("client_assertion together with another client authentication")
    try:
        header, claims = proofs.parse_compact(assertion)
    except ChainError as exc:
        raise AssertionRefused(str(exc)) from None
    client_id = claims.get("sub")
    if not isinstance(client_id, str) or not client_id or claims.get("iss") != client_id:
        raise AssertionRefused("iss and sub must both be the client_id")
    if client_id_param is not None and client_id_param != client_id:
        raise AssertionRefused("client_id differs from the assertion's sub")
    # One query: the client with its keys (a client without a ChainClient row has none).
    try:  # get(), not first(): client_id is unique, so no ORDER BY
        chain_client = ChainClient.objects.select_related("application").get(application__client_id=client_id)
    except ChainClient.DoesNotExist:
        chain_client = None
    if chain_client is None or not usable(chain_client.application):
        raise AssertionRefused("unknown client, or one without registered keys")
    application = chain_client.application
    application._chain_grant_row = chain_client  # policy.chain_client_of: read once per request
    keys = client_keys(chain_client)
    if not keys:
        raise AssertionRefused("the client has no registered keys")
    try:
        alg = proofs.check_algorithm(header.get("alg"), chain_grant_settings.CLIENT_ASSERTION_ALGORITHMS)
        key = proofs.select_key([_Key(k) for k in keys], header.get("kid"))
        proofs.verify_signature(assertion, key.jwk, alg)
        check_times(claims)
        if not isinstance(claims.get("aud"), str):  # draft-ietf-oauth-rfc7523bis: one audience, never a list
            raise ChainError("the assertion's aud must be a single string")
        proofs.check_audience(claims, audiences)
        jti = proofs.check_jti(claims)
    except ChainError as exc:
        raise AssertionRefused(str(exc)) from None
    use_once("client_assertion", client_id, jti, claims["exp"], chain_grant_settings.PROOF_CLOCK_SKEW)
    return application


def check_times(claims: dict[str, Any], now: float | None = None) -> None:
    """``exp`` present and in the future, at most CLIENT_ASSERTION_MAX_LIFETIME away
    (from ``iat``, or from now without one); ``iat`` and ``nbf`` not in the future."""
    now = time.time() if now is None else now
    skew, longest = chain_grant_settings.PROOF_CLOCK_SKEW, chain_grant_settings.CLIENT_ASSERTION_MAX_LIFETIME
    exp = proofs.int_claim(claims, "exp")
    iat = proofs.int_claim(claims, "iat") if "iat" in claims else None
    if exp <= now - skew:
        raise ChainError("the assertion expired")
    if exp - (iat if iat is not None else now) > longest + (0 if iat is not None else skew):
        raise ChainError("the assertion lives longer than CLIENT_ASSERTION_MAX_LIFETIME")
    if iat is not None and iat > now + skew:
        raise ChainError("the assertion was issued in the future")
    if "nbf" in claims and proofs.int_claim(claims, "nbf") > now + skew:
        raise ChainError("the assertion is not valid yet")


class _Key:
    """A registered JWK as :func:`proofs.select_key` picks keys (by ``kid``)."""

    def __init__(self, value: dict[str, Any]):
        self.jwk = value
        self.kid = value.get("kid")
