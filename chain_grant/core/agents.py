"""The agents registry: registering agents, rotating their keys (for the
``chain_grant_agent`` command, the admin and scripts), and finding the keys a hop
proof may be signed with."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from jwcrypto import jwk
from oauth2_provider.scopes import get_scopes_backend

from ..models import Agent, AgentKey, ChainedGrant
from . import proofs
from .errors import ChainError
from .lifecycle import revoke_for_disabled_agent, revoke_for_disabled_key
from .proofs import load_public_keys


@transaction.atomic
def register_agent(
    identifier: str,
    key_text: str,
    applications=(),
    scopes: str | None = None,
    algorithms: list[str] | None = None,
    name: str | None = None,
) -> Agent:
    """Create an agent, or add keys/applications to one, and add its public key(s).
    Idempotent per kid. ``scopes``/``algorithms``/``name`` change an existing agent
    only when given. Raises ValueError for private, symmetric or unparsable keys."""
    public_keys = load_public_keys(key_text)
    if scopes is not None:
        refuse_unknown_scopes(scopes)
    refuse_keys_of_other_agents(identifier, public_keys)
    policy = {
        "allowed_scopes": None if scopes is None else " ".join(scopes.split()),
        "allowed_algorithms": algorithms,
        "name": name,
    }
    policy = {field: value for field, value in policy.items() if value is not None}
    agent, created = Agent.objects.get_or_create(identifier=identifier, defaults={"name": identifier, **policy})
    if not created and policy:
        for field, value in policy.items():
            setattr(agent, field, value)
        agent.save(update_fields=[*policy, "updated"])
    agent.applications.add(*applications)
    add_keys(agent, public_keys)
    return agent


def has_acted(agent: Agent) -> bool:
    return agent.pk is not None and ChainedGrant.objects.filter(agent_id=agent.pk).exists()


def refuse_identifier_change(agent: Agent) -> None:
    """``Agent.identifier`` is what its proofs' ``sub`` and the steps it acted in say; once
    it has acted it cannot change (register a new agent instead). Raises ValueError."""
    if agent.pk is None:
        return
    stored = Agent.objects.filter(pk=agent.pk).values_list("identifier", flat=True).first()
    if stored is not None and stored != agent.identifier and has_acted(agent):
        raise ValueError(f"agent {stored!r} has acted in chains: its identifier cannot change (add a new agent)")


def refuse_unknown_scopes(scopes: str) -> None:
    """An agent may only be allowed scopes the IdP's scopes backend defines."""
    unknown = sorted(set(scopes.split()) - set(get_scopes_backend().get_all_scopes()))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)} (not in the IdP's scopes backend)")


def refuse_keys_of_other_agents(identifier: str, public_keys: list[dict]) -> None:
    """One public key belongs to one agent: the same key (by RFC 7638 thumbprint, whatever
    its kid) registered to two agents would let either sign as the other."""
    for public in public_keys:
        thumbprint = jwk.JWK(**public).thumbprint()
        others = AgentKey.objects.exclude(agent__identifier=identifier).filter(jwk__kty=public["kty"])
        for other in others.select_related("agent").only("jwk", "agent__identifier"):
            if jwk.JWK(**other.jwk).thumbprint() == thumbprint:
                raise ValueError(f"this key is already registered to agent {other.agent.identifier!r}")


def add_keys(agent: Agent, public_keys: list[dict]) -> list[AgentKey]:
    added = []
    for public in public_keys:
        key, created = AgentKey.objects.get_or_create(agent=agent, kid=public["kid"], defaults={"jwk": public})
        if not created and key.jwk != public:
            raise ValueError(f"kid {public['kid']!r} is already used by another key of this agent")
        if not created and not key.is_active:
            key.is_active, key.disabled_at = True, None
            key.save(update_fields=["is_active", "disabled_at"])
        added.append(key)
    return added


@transaction.atomic
def rotate_keys(agent: Agent, key_text: str) -> tuple[list[AgentKey], int]:
    """Add the new key(s), then disable every other active key. Returns (new, disabled)."""
    public_keys = load_public_keys(key_text)
    refuse_keys_of_other_agents(agent.identifier, public_keys)
    new = add_keys(agent, public_keys)
    disabled = (
        agent.keys.filter(is_active=True)
        .exclude(pk__in=[k.pk for k in new])
        .update(is_active=False, disabled_at=timezone.now())
    )
    return new, disabled


def disable(agent: Agent, kid: str | None = None) -> int:
    """Disable one key (``kid``) or the whole agent; with ON_DISABLE="revoke" (the
    default) the steps it signed, their subtrees and their tokens are revoked too.
    Returns how many keys or agents were disabled."""
    if kid:
        keys = list(agent.keys.filter(kid=kid, is_active=True))
        count = agent.keys.filter(pk__in=[k.pk for k in keys]).update(is_active=False, disabled_at=timezone.now())
        for key in keys:
            revoke_for_disabled_key(key)
        return count
    count = Agent.objects.filter(pk=agent.pk, is_active=True).update(is_active=False)
    revoke_for_disabled_agent(agent)
    return count


def agent_keys_for(application):
    """A ``find_keys(sub)`` for proofs.verify_agent_proof: the active keys of an active
    agent registered for this client, each with its agent loaded (one query)."""

    def find_keys(sub: str):
        return AgentKey.objects.select_related("agent").filter(
            agent__identifier=sub,
            agent__is_active=True,
            agent__applications=application,
            is_active=True,
        )

    return find_keys


def self_asserted_agent(verified: proofs.VerifiedProof, application) -> Agent:
    """Relaxed (PoC) mode: the did:jwk machine account for a self-asserted key.

    Never for public clients (a stolen code plus a fresh key would bypass the code's
    PKCE), never a registered agent, and never a key the account no longer has active.
    """
    if application.client_type == application.CLIENT_PUBLIC:
        raise ChainError("Self-asserted agent keys are not accepted from public clients.")
    public = verified.self_asserted_jwk
    thumbprint = jwk.JWK(**public).thumbprint()
    agent, created = Agent.objects.get_or_create(
        identifier=verified.subject,
        defaults={
            # The proof's own sub when it is not the account's name (a PoC client's label).
            "name": "self-asserted " + str(verified.claims.get("sub") or verified.subject)[:40],
            "self_asserted": True,
            "allowed_scopes": " ".join(get_scopes_backend().get_available_scopes(application=application)),
        },
    )
    if created:
        agent.keys.create(kid=thumbprint, jwk=public)
    elif not (agent.self_asserted and agent.is_active and agent.keys.filter(kid=thumbprint, is_active=True).exists()):
        raise ChainError("Proof sub is not an active agent registered for this client.")
    agent.applications.add(application)
    return agent
