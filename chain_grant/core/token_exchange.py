"""RFC 8693 token exchange onto a chain: the standard front door for an agent hop.

A client presents an access token issued from a chain step (``subject_token``) and a
JWT signed by a registered agent's key (``actor_token``, checked as a hop proof is, with
``ath`` in place of ``c_hash``). The result is a new ``agent`` step in the same tree, a
child of the subject token's step, and an access token for it, in one transaction:
the step is written already exchanged (its code never exists outside this function),
so the tree, introspection's ``act``, revocation and the signed record treat it as any
exchanged hop.

Errors follow RFC 8693 §2.2.2: a subject or actor token that is invalid or unacceptable
by policy (unknown, expired, revoked, another client's, a bad proof, a chain limit, a
forbidden hand-off) is ``invalid_request``; a scope the agent may not hold, or one
whose person's consent the hand-off policy finds stale, is ``invalid_scope``; a
resource or audience the subject token does not allow is ``invalid_target``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from .. import signals
from ..client.jose import sha256_hex
from ..models import ChainedGrant
from ..settings import chain_grant_settings
from . import dpop, handoff, lineage, proofs
from .agents import agent_keys_for
from .codes import code_digest, new_code
from .errors import ChainError
from .lifecycle import record_exchange
from .policy import attenuate_scope
from .steps import agent_step, append_once, lock_step, normalised_scope

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
VIA = "token_exchange"  # recorded in the step's actor (covered by its link hash)

UNKNOWN_SUBJECT = "The subject_token is not an active access token issued to this client from a chain step."


@dataclass(frozen=True)
class ExchangeRequest:
    """The RFC 8693 §2.1 parameters, as the token endpoint received them."""

    subject_token: Any
    subject_token_type: Any
    actor_token: Any
    actor_token_type: Any
    scope: str | None = None
    resource: Sequence[str] = ()
    audience: Sequence[str] = ()
    requested_token_type: Any = None


def check_shape(req: ExchangeRequest) -> None:
    """What can be refused before anything is read: the token types this server
    exchanges (an access token for an access token, acted on by an agent's JWT)."""
    for name in ("subject_token", "subject_token_type"):
        if not isinstance(getattr(req, name), str) or not getattr(req, name):
            raise ChainError(f"Missing {name} parameter.", "invalid_request")
    if req.subject_token_type != ACCESS_TOKEN_TYPE:
        raise ChainError(f"subject_token_type must be {ACCESS_TOKEN_TYPE}.", "invalid_request")
    if not isinstance(req.actor_token, str) or not req.actor_token:
        raise ChainError("Missing actor_token: a JWT signed by the registered agent that acts next.", "invalid_request")
    if req.actor_token_type != JWT_TOKEN_TYPE:
        raise ChainError(f"actor_token_type must be {JWT_TOKEN_TYPE}.", "invalid_request")
    if req.requested_token_type not in (None, "", ACCESS_TOKEN_TYPE):
        # A refresh token never: an agent's hold on the chain ends with its access token.
        raise ChainError(f"requested_token_type must be {ACCESS_TOKEN_TYPE}.", "invalid_request")


def target_of(req: ExchangeRequest, subject_resource: Sequence[str]) -> list[str]:
    """The new token's RFC 8707 restriction: the requested ``resource`` values, each one
    the subject token allows (all, if it is unrestricted), or the subject's own; every
    ``audience`` must then be one of them (this server keeps no registry of logical
    audience names, so an audience is a resource's URI)."""
    allowed = list(subject_resource)
    for value in req.resource:
        try:  # urlsplit raises ValueError ("http://[x"); no database stores a NUL (PostgreSQL's jsonb)
            parts = urlsplit(value) if "\x00" not in value else None
        except ValueError:
            parts = None
        if parts is None or not parts.scheme or not parts.netloc or parts.fragment:
            raise ChainError(f"The resource {value[:100]!r} is not an absolute URI.", "invalid_target")
        if allowed and value not in allowed:
            raise ChainError(f"The subject_token does not allow the resource {value[:100]!r}.", "invalid_target")
    target = list(dict.fromkeys(req.resource)) or allowed
    for value in req.audience:
        if value not in target:
            raise ChainError(
                f"Unknown audience {value[:100]!r}: name a resource the subject_token allows.", "invalid_target"
            )
    return target


def exchange(
    application,
    req: ExchangeRequest,
    *,
    audiences: list[str],
    issue_token: Callable[[ChainedGrant, list[str], int], dict[str, Any]],
    dpop_jkt: str = "",
) -> tuple[ChainedGrant, dict[str, Any]]:
    """Exchange ``req.subject_token`` for a new agent step and its access token.

    ``audiences``: what the actor token's ``aud`` may be (the issuer). ``issue_token(step,
    resource, longest)`` writes the token for the (saved) step with the IdP's own token
    code, living at most ``longest`` seconds (what the subject token has left: a hand-off
    never outlives the token it came from), and returns its response body. ``dpop_jkt``:
    the key of the request's DPoP proof (checked by the caller); a bound subject token
    needs a proof by its key, and the new token is bound to it. Nothing is written
    unless everything holds."""
    check_shape(req)
    try:
        return _exchange(application, req, audiences, issue_token, dpop_jkt)
    except ChainError as exc:
        if exc.error == "invalid_grant":  # RFC 8693 §2.2.2: an unacceptable token is invalid_request
            raise ChainError(exc.description, "invalid_request") from None
        raise


def _exchange(application, req, audiences, issue_token, dpop_jkt) -> tuple[ChainedGrant, dict[str, Any]]:
    subject = (
        get_access_token_model().objects.filter(token_checksum=sha256_hex(req.subject_token)).first()
        if len(req.subject_token) <= 4096
        else None
    )
    if subject is None or subject.application_id != application.pk or subject.is_expired():
        raise ChainError(UNKNOWN_SUBJECT)
    try:
        found = lineage.step_for_token(subject)
    except lineage.UnverifiedLink:
        found = None
    if found is None:
        raise ChainError(UNKNOWN_SUBJECT)
    bound = dpop.bound_key(req.subject_token)
    if bound and bound != dpop_jkt:
        raise ChainError("The subject_token is DPoP-bound: send a DPoP proof by its key.")
    verified = proofs.verify_agent_proof(
        req.actor_token,
        code=None,
        audiences=audiences,
        find_keys=agent_keys_for(application),
        subject_token=req.subject_token,
        require_ath=chain_grant_settings.TOKEN_EXCHANGE_REQUIRE_ATH,
    )
    if not verified.jti:  # pragma: no cover  (verify_agent_proof requires one outside relaxed mode)
        raise ChainError("The actor_token has no jti.")
    resource = target_of(req, subject.resource or [])
    with transaction.atomic():
        policy = handoff.policy_for(application)  # read once: limits, edges, fresh consent
        parent, _ = lock_step(application, found.pk, found.root_id, handoff.limits(application, policy), by_token=True)
        agent = verified.key.agent
        granted = attenuate_scope(subject.scope, agent.scope_set, req.scope)
        decision = handoff.check(application, parent, agent.identifier, granted, policy=policy)
        step_id = uuid.uuid4()
        now = timezone.now()
        unused = SimpleNamespace(  # the step's code: never issued (the token is), so no DOT Grant
            code=code_digest(new_code()),
            expires=now + timedelta(seconds=chain_grant_settings.CODE_EXPIRE_SECONDS),
            redirect_uri=parent.redirect_uri,
            user_id=parent.user_id,
            scope=granted,
            pk=None,
            code_challenge="",
            code_challenge_method="",
            resource=resource,
        )
        step = agent_step(
            application,
            unused,
            verified,
            id=step_id,
            agent=agent,
            requested_scope=normalised_scope(req.scope) if req.scope is not None else granted,
            dpop_jkt=dpop_jkt,
            actor={"via": VIA},
            policy_decision=decision,
        )
        append_once(step, parent, reused="The actor_token's jti was already used.")
        body = issue_token(step, resource, max(1, int((subject.expires - timezone.now()).total_seconds())))
        if not record_exchange(step, body["access_token"], dpop_jkt):  # pragma: no cover  (the step is new)
            raise ChainError("The step could not be exchanged.")
    signals.step_created.send(sender=ChainedGrant, step=step)
    return step, body
