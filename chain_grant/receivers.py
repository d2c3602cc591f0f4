"""Model signal receivers that turn "an actor was disabled" into the chain's rule
(:mod:`chain_grant.core.lifecycle`, ``revoke_for_disabled_*``), whichever screen or
command disabled it: the admin, ``chain_grant_agent disable``, the IdP's own user
management; and that keep an agent's identifier fixed once it has acted
(``core.agents.refuse_identifier_change``). Connected in ``ChainGrantConfig.ready()``.

A ``QuerySet.update()`` sends no signal; ``chain_grant.core.agents.disable`` calls
the rule itself, and the exchange refuses a code of a disabled agent or person
anyway (ON_DISABLE="revoke").
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_save

from .core import agents, lifecycle
from .models import Agent, AgentKey, ChainClient
from .settings import chain_grant_settings


def _agent_saved(sender, instance: Agent, **kwargs) -> None:
    if not instance.is_active:
        lifecycle.revoke_for_disabled_agent(instance)


def _agent_saving(sender, instance: Agent, **kwargs) -> None:
    agents.refuse_identifier_change(instance)


def _key_saved(sender, instance: AgentKey, **kwargs) -> None:
    if not instance.is_active:
        lifecycle.revoke_for_disabled_key(instance)


def _client_saved(sender, instance: ChainClient, **kwargs) -> None:
    if not instance.code_chain_enabled:
        lifecycle.revoke_for_disabled_client(instance.application)


def _user_saved(sender, instance, update_fields=None, **kwargs) -> None:
    # The host's own model: costs nothing unless the account is inactive, and one
    # indexed query then.
    if update_fields is not None and "is_active" not in update_fields:
        return
    if getattr(instance, "is_active", True) is False and chain_grant_settings.ON_DISABLE == "revoke":
        lifecycle.revoke_for_disabled_person(instance)


def connect() -> None:
    post_save.connect(_agent_saved, sender=Agent, dispatch_uid="chain_grant.agent_disabled")
    pre_save.connect(_agent_saving, sender=Agent, dispatch_uid="chain_grant.agent_identifier_fixed")
    post_save.connect(_key_saved, sender=AgentKey, dispatch_uid="chain_grant.key_disabled")
    post_save.connect(_client_saved, sender=ChainClient, dispatch_uid="chain_grant.client_disabled")
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="chain_grant.person_disabled")
