"""Registering agents and rotating their keys (plain functions for the
``chain_grant_agent`` command, the admin and scripts)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .models import Agent, AgentKey
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
    policy = {"allowed_scopes": None if scopes is None else " ".join(scopes.split()),
              "allowed_algorithms": algorithms, "name": name}
    policy = {field: value for field, value in policy.items() if value is not None}
    agent, created = Agent.objects.get_or_create(identifier=identifier, defaults={"name": identifier, **policy})
    if not created and policy:
        for field, value in policy.items():
            setattr(agent, field, value)
        agent.save(update_fields=[*policy, "updated"])
    agent.applications.add(*applications)
    add_keys(agent, public_keys)
    return agent


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
    new = add_keys(agent, load_public_keys(key_text))
    disabled = (
        agent.keys.filter(is_active=True)
        .exclude(pk__in=[k.pk for k in new])
        .update(is_active=False, disabled_at=timezone.now())
    )
    return new, disabled


def disable(agent: Agent, kid: str | None = None) -> int:
    """Disable one key (``kid``) or the whole agent."""
    if kid:
        return agent.keys.filter(kid=kid, is_active=True).update(is_active=False, disabled_at=timezone.now())
    return Agent.objects.filter(pk=agent.pk, is_active=True).update(is_active=False)
