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
    scopes: str = "",
    algorithms: list[str] | None = None,
    name: str = "",
) -> Agent:
    """Create or update an agent and add its public key(s). Idempotent per kid.
    Raises ValueError for private, symmetric or unparsable keys."""
    public_keys = load_public_keys(key_text)
    agent, _ = Agent.objects.update_or_create(
        identifier=identifier,
        defaults={"name": name or identifier, "allowed_scopes": " ".join(scopes.split()),
                  "allowed_algorithms": algorithms or []},
    )
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
